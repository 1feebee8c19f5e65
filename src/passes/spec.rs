//! Pass specs on the command line: `name` or `name{key=value,...}`, values being
//!
//! - a bare word: `true` / `false`, an integer, a decimal number, else a string (`/head/*`, `Conv`); it ends
//!   at `,`, `]` or `}` and cannot hold `=`, brackets or quotes;
//! - a quoted string: `"a, b"` (escapes `\"` `\\` `\n` `\t` `\r`) or `'a, b'` (no escapes); quote a string
//!   that would otherwise read as a number or a bool (`name="8"`);
//! - a list `[Conv,MatMul]` or a table `{b=1,c=[x]}`, nested to any depth up to 32.
//!
//! Spaces around names, `=`, `,` and brackets are ignored; a trailing comma is allowed; in option names `-`
//! reads as `_`. The options parse into a `serde_json::Value` table that the pass's options struct is
//! deserialized from (`options::parse`), so a recipe file can feed the same struct. Malformed specs are usage
//! errors naming the column; nothing here panics on any input.

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Nesting limit of lists and tables.
const MAX_DEPTH: usize = 32;

/// A parsed pass spec.
#[derive(Clone, Debug, PartialEq)]
pub struct PassSpec {
    pub name: String,
    /// The options as a table (empty when the spec has none).
    pub options: Map<String, Value>,
}

/// Parse `name` or `name{key=value,...}`.
pub fn parse(spec: &str) -> Result<PassSpec> {
    let mut p = Parser {
        spec,
        b: spec.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    let start = p.i;
    while p
        .peek()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        p.i += 1;
    }
    let name = spec[start..p.i].to_string();
    if name.is_empty() {
        return Err(p.err("expected a pass name"));
    }
    p.ws();
    let options = match p.peek() {
        None => Map::new(),
        Some(b'{') => {
            let t = p.table()?;
            p.ws();
            if p.peek().is_some() {
                return Err(p.err("unexpected text after the closing '}'"));
            }
            t
        }
        Some(_) => return Err(p.err(
            "unexpected character after the pass name (options go in braces: name{key=value,...})",
        )),
    };
    Ok(PassSpec { name, options })
}

/// Split a `-p` argument into specs at the commas outside braces, brackets and quotes.
pub fn split(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i64;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in list.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                ',' if depth <= 0 => {
                    out.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            },
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Write a value in spec syntax (what `parse` reads back as the same value).
pub fn render(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.trim() == s
                && !s.contains([',', '[', ']', '{', '}', '"', '\'', '\\', '='])
                && scalar(s) == Value::String(s.clone());
            if plain {
                s.clone()
            } else {
                let mut q = String::from("\"");
                for c in s.chars() {
                    match c {
                        '"' => q.push_str("\\\""),
                        '\\' => q.push_str("\\\\"),
                        '\n' => q.push_str("\\n"),
                        '\t' => q.push_str("\\t"),
                        '\r' => q.push_str("\\r"),
                        c => q.push(c),
                    }
                }
                q.push('"');
                q
            }
        }
        Value::Array(a) => format!("[{}]", a.iter().map(render).collect::<Vec<_>>().join(",")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}={}", render(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// A bare word: bool, integer, number, else string.
fn scalar(s: &str) -> Value {
    match s {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = s.parse::<u64>() {
        return Value::Number(u.into());
    }
    let numeric = s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
        && s.contains(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    if numeric {
        if let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

struct Parser<'a> {
    spec: &'a str,
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn err(&self, msg: &str) -> Error {
        let at = if self.i >= self.b.len() {
            "at the end".to_string()
        } else {
            // columns count characters, 1-based
            let col = String::from_utf8_lossy(&self.b[..self.i]).chars().count() + 1;
            format!("at column {col}")
        };
        Error::Usage(format!("pass spec '{}': {msg} {at}", self.spec))
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(&format!("values nest deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// At `{`: a table up to its `}`.
    fn table(&mut self) -> Result<Map<String, Value>> {
        self.enter()?;
        self.i += 1;
        let mut map = Map::new();
        loop {
            self.ws();
            match self.peek() {
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                None => return Err(self.err("missing '}'")),
                _ => {}
            }
            let start = self.i;
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
            {
                self.i += 1;
            }
            if self.i == start {
                return Err(self.err("expected an option name"));
            }
            let key = self.spec[start..self.i].replace('-', "_");
            self.ws();
            if self.peek() != Some(b'=') {
                return Err(self.err(&format!("expected '=' after option '{key}'")));
            }
            self.i += 1;
            self.ws();
            let value = self.value()?;
            if map.contains_key(&key) {
                self.i = start;
                return Err(self.err(&format!("option '{key}' is given twice")));
            }
            map.insert(key, value);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                None => return Err(self.err("missing '}'")),
                Some(_) => return Err(self.err("expected ',' or '}'")),
            }
        }
        self.depth -= 1;
        Ok(map)
    }

    /// At `[`: a list up to its `]`.
    fn list(&mut self) -> Result<Vec<Value>> {
        self.enter()?;
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                None => return Err(self.err("missing ']'")),
                _ => {}
            }
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {}
                None => return Err(self.err("missing ']'")),
                Some(_) => return Err(self.err("expected ',' or ']'")),
            }
        }
        self.depth -= 1;
        Ok(items)
    }

    fn value(&mut self) -> Result<Value> {
        match self.peek() {
            Some(b'[') => Ok(Value::Array(self.list()?)),
            Some(b'{') => Ok(Value::Object(self.table()?)),
            Some(q @ (b'"' | b'\'')) => Ok(Value::String(self.quoted(q)?)),
            None | Some(b',' | b'}' | b']') => Err(self.err("missing value")),
            Some(_) => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    match c {
                        b',' | b'}' | b']' => break,
                        b'=' => {
                            return Err(self.err(
                                "'=' inside a value (a missing ','? quote a value that holds '=')",
                            ))
                        }
                        b'[' | b'{' | b'"' | b'\'' => {
                            return Err(self.err(&format!(
                                "'{}' inside a bare value (quote the value)",
                                c as char
                            )))
                        }
                        _ => self.i += 1,
                    }
                }
                Ok(scalar(self.spec[start..self.i].trim()))
            }
        }
    }

    /// At a quote: the string up to the matching quote.
    fn quoted(&mut self, q: u8) -> Result<String> {
        let open = self.i;
        self.i += 1;
        let mut out = String::new();
        let mut run = self.i;
        loop {
            match self.peek() {
                None => {
                    self.i = open;
                    return Err(self.err("unterminated string starting"));
                }
                Some(c) if c == q => {
                    out.push_str(&self.spec[run..self.i]);
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') if q == b'"' => {
                    out.push_str(&self.spec[run..self.i]);
                    let e = match self.b.get(self.i + 1) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        _ => return Err(self.err("unknown escape (use \\\" \\\\ \\n \\t \\r)")),
                    };
                    out.push(e);
                    self.i += 2;
                    run = self.i;
                }
                Some(_) => self.i += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(spec: &str) -> Value {
        Value::Object(parse(spec).unwrap().options)
    }

    fn err(spec: &str) -> String {
        match parse(spec) {
            Err(Error::Usage(m)) => m,
            other => panic!("{spec}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn names_and_scalars() {
        assert_eq!(parse(" dce ").unwrap().name, "dce");
        assert_eq!(parse("dce{}").unwrap().options, Map::new());
        assert_eq!(
            opts("x{a=1, b=-2.5e3, c=true, d=Conv, e=/head/*, f = spaced words ,}"),
            json!({"a": 1, "b": -2500.0, "c": true, "d": "Conv", "e": "/head/*", "f": "spaced words"})
        );
        assert_eq!(
            opts("x{big=18446744073709551615}"),
            json!({"big": u64::MAX})
        );
        assert_eq!(opts("x{per-channel=false}"), json!({"per_channel": false}));
        // things that look a bit like numbers stay strings
        assert_eq!(
            opts("x{a=1.2.3,b=inf,c=nan,d=e5}"),
            json!({"a": "1.2.3", "b": "inf", "c": "nan", "d": "e5"})
        );
    }

    #[test]
    fn lists_tables_and_quotes() {
        assert_eq!(
            opts("quantize{ops=[Conv,MatMul],exclude=[/head/*]}"),
            json!({"ops": ["Conv", "MatMul"], "exclude": ["/head/*"]})
        );
        assert_eq!(opts("x{a={b=1}}"), json!({"a": {"b": 1}}));
        assert_eq!(
            opts(r#"x{a="8", b='a, b', c="q\"\\\n", d=[ ], e=[[1,2],[3]], f={}}"#),
            json!({"a": "8", "b": "a, b", "c": "q\"\\\n", "d": [], "e": [[1, 2], [3]], "f": {}})
        );
        assert_eq!(opts("x{s=\"é, ü\"}"), json!({"s": "é, ü"}));
    }

    #[test]
    fn errors_name_the_place() {
        assert!(err("").contains("expected a pass name"));
        assert!(err("{a=1}").contains("expected a pass name at column 1"));
        let e = err("quantize{ops=[Conv");
        assert!(e.contains("missing ']' at the end"), "{e}");
        assert!(err("x{a=1").contains("missing '}'"));
        assert!(err("x{a}").contains("expected '=' after option 'a' at column 4"));
        assert!(err("x{a=}").contains("missing value at column 5"));
        assert!(err("x{a=1,a=2}").contains("option 'a' is given twice at column 7"));
        assert!(err("x{a=1} y").contains("after the closing '}'"));
        assert!(err("x y").contains("after the pass name"));
        assert!(err("x{a=b[c]}").contains("quote the value"));
        assert!(err("x{a=\"open}").contains("unterminated string"));
        assert!(err("x{a=\"\\q\"}").contains("unknown escape"));
        assert!(err("x{=1}").contains("expected an option name"));
        assert!(
            err("x{a=1 b=2}").contains("missing ','? quote a value that holds '=') at column 8")
        );
        assert!(err("x{a=1 \"b\"}").contains("quote the value"));
        let deep = format!("x{{a={}1{}}}", "[".repeat(40), "]".repeat(40));
        assert!(err(&deep).contains("nest deeper than 32"));
        // column counts characters, not bytes
        assert!(err("x{é=1}").contains("column 3"), "{}", err("x{é=1}"));
    }

    #[test]
    fn split_respects_nesting_and_quotes() {
        assert_eq!(
            split("dce, quantize{ops=[Conv,MatMul],x='a,b'} ,topo-sort,,"),
            ["dce", "quantize{ops=[Conv,MatMul],x='a,b'}", "topo-sort"]
        );
        assert_eq!(split(r#"a{s="x\",y"},b"#), [r#"a{s="x\",y"}"#, "b"]);
        // unbalanced input still splits without panicking; parse reports the error
        assert_eq!(split("a}],b"), ["a}]", "b"]);
    }

    /// splitmix64: a tiny deterministic generator for the fuzz-style tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_truncated_specs_never_panic() {
        const ALPHABET: &[&str] = &[
            "a", "x", "-", "_", "{", "}", "[", "]", "=", ",", "\"", "'", "\\", " ", "1", ".", "e",
            "é", "\n", "true", "\u{0}",
        ];
        let mut rng = Rng(7);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = rng.below(24);
            let s: String = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            for spec in [s.clone(), format!("x{{{s}}}"), format!("x{{a={s}}}")] {
                let _ = split(&spec);
                if let Ok(p) = parse(&spec) {
                    parsed += 1;
                    // what parses renders back to the same options
                    let again = parse(&format!(
                        "{}{}",
                        p.name,
                        render(&Value::Object(p.options.clone()))
                    ))
                    .unwrap_or_else(|e| panic!("{spec:?}: render does not parse back: {e}"));
                    assert_eq!(again.options, p.options, "{spec:?}");
                }
            }
        }
        assert!(
            parsed > 1000,
            "the generator should also make valid specs ({parsed})"
        );
        let valid =
            r#"quantize{ops=[Conv,MatMul],exclude=["/head/*",'x'],nested={a={b=[1,2.5,true]}}}"#;
        for (i, _) in valid.char_indices() {
            let prefix = &valid[..i];
            assert!(parse(prefix).is_err() || !prefix.contains('{'), "{prefix}");
        }
        assert!(parse(valid).is_ok());
    }

    #[test]
    fn render_round_trips_values() {
        let mut rng = Rng(11);
        fn gen(rng: &mut Rng, depth: usize) -> Value {
            match rng.below(if depth > 3 { 4 } else { 6 }) {
                0 => Value::Bool(rng.below(2) == 0),
                1 => json!(rng.next() as i64 >> rng.below(60)),
                2 => json!((rng.next() % 100_000) as f64 / 64.0 - 700.0),
                3 => {
                    const WORDS: &[&str] = &[
                        "Conv", "8", "true", " pad", "a,b", "q\"", "", "/h/*", "é", "x=y", "1e3",
                    ];
                    json!(WORDS[rng.below(WORDS.len())])
                }
                4 => Value::Array((0..rng.below(4)).map(|_| gen(rng, depth + 1)).collect()),
                _ => {
                    let mut m = Map::new();
                    for k in 0..rng.below(4) {
                        m.insert(format!("k{k}"), gen(rng, depth + 1));
                    }
                    Value::Object(m)
                }
            }
        }
        for _ in 0..2000 {
            let v = gen(&mut rng, 0);
            let spec = format!("p{{v={}}}", render(&v));
            assert_eq!(opts(&spec)["v"], v, "{spec}");
        }
    }
}
