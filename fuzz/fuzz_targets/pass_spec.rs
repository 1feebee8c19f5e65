//! Fuzz pass specs: any text either builds passes or fails with a usage error, never panics. Whatever parses
//! must render back (`spec::render`) to the same options.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onnx_rewrite::passes::{registry, spec};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for s in spec::split(&text) {
        if let Ok(p) = spec::parse(&s) {
            let options = serde_json::Value::Object(p.options.clone());
            let again = spec::parse(&format!("{}{}", p.name, spec::render(&options)))
                .expect("a rendered spec parses");
            assert_eq!(again.options, p.options);
            let _ = registry::make(&p.name, options);
        }
    }
});
