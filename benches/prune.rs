//! Channel pruning at scale: group analysis + plan + removal (`prune{method=channel,mode=remove}`) on generated
//! ResNet-style models with 200 and 400 convolutions (basic blocks: Conv -> BN -> Relu -> Conv -> BN -> Add
//! with the block input -> Relu, a 1x1 projection Conv where the width changes), each size measured in its own
//! child process so its peak RSS (VmHWM) is its own. Figures are printed, never asserted; the time of 400 convs
//! should stay near 2x that of 200 (the analysis is linear in the graph).
//!
//! `cargo bench --bench prune`

use std::process::Command;
use std::time::Instant;

use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{Attribute, DataType, Model, Tensor, ValueId};
use onnx_rewrite::passes::prune::{Prune, PruneOptions};

fn vals(n: usize, salt: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let mut z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ salt.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Gen {
    b: GraphBuilder,
    salt: u64,
    convs: usize,
}

impl Gen {
    fn init(&mut self, name: String, dims: Vec<i64>) -> ValueId {
        self.salt += 1;
        let n = dims.iter().product::<i64>() as usize;
        self.b
            .initializer(Tensor::from_f32(name, dims, &vals(n, self.salt)))
    }

    fn conv(&mut self, x: ValueId, cout: i64, cin: i64, k: i64) -> ValueId {
        self.convs += 1;
        let i = self.convs;
        let w = self.init(format!("conv{i}_w"), vec![cout, cin, k, k]);
        self.b.node(
            "Conv",
            &[x, w],
            vec![Attribute::ints("pads", vec![k / 2; 4])],
            1,
        )[0]
    }

    fn bn(&mut self, x: ValueId, c: i64) -> ValueId {
        let i = self.convs;
        let g = self.init(format!("bn{i}_g"), vec![c]);
        let b = self.init(format!("bn{i}_b"), vec![c]);
        let m = self.init(format!("bn{i}_m"), vec![c]);
        let v = self.b.initializer(Tensor::from_f32(
            format!("bn{i}_v"),
            vec![c],
            &vec![1.0; c as usize],
        ));
        self.b
            .node("BatchNormalization", &[x, g, b, m, v], vec![], 1)[0]
    }
}

/// A ResNet-style graph with exactly `convs` convolutions (stem + blocks of 2 + projections + head).
fn resnet(convs: usize) -> Model {
    let mut g = Gen {
        b: GraphBuilder::new("resnet"),
        salt: 0,
        convs: 0,
    };
    let x = g.b.input("x", DataType::FLOAT, &["1", "3", "16", "16"]);
    let mut c = 16;
    let s = g.conv(x, c, 3, 3);
    let s = g.bn(s, c);
    let mut h = g.b.node("Relu", &[s], vec![], 1)[0];
    // four stages of 16, 32, 64, 128 channels, each a quarter of the blocks: a deeper model keeps the stage widths
    // (as ResNet-101 does against ResNet-50), so 400 convs have about twice the parameters of 200 and the time
    // ratio measures the analysis, not a wider model
    let blocks = (convs - 1) / 2;
    let mut block = 0;
    while g.convs + 3 <= convs {
        block += 1;
        let stage = (block * 4 - 1) / blocks.max(1);
        let cout = if c < (16 << stage.min(3)) { c * 2 } else { c };
        let a = g.conv(h, cout, c, 3);
        let a = g.bn(a, cout);
        let a = g.b.node("Relu", &[a], vec![], 1)[0];
        let b2 = g.conv(a, cout, cout, 3);
        let b2 = g.bn(b2, cout);
        let skip = if cout != c { g.conv(h, cout, c, 1) } else { h };
        let sum = g.b.node("Add", &[b2, skip], vec![], 1)[0];
        h = g.b.node("Relu", &[sum], vec![], 1)[0];
        c = cout;
    }
    while g.convs < convs {
        let a = g.conv(h, c, c, 1);
        h = g.b.node("Relu", &[a], vec![], 1)[0];
    }
    let p = g.b.node("GlobalAveragePool", &[h], vec![], 1)[0];
    let f = g.b.node("Flatten", &[p], vec![], 1)[0];
    let w = g.init("fc_w".into(), vec![c, 10]);
    let y = g.b.node("MatMul", &[f, w], vec![], 1)[0];
    g.b.output(y, DataType::FLOAT, &["1", "10"]);
    model(g.b.build(), 13)
}

fn hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn child(convs: usize) {
    let m0 = resnet(convs);
    let p = Prune::new(PruneOptions {
        method: "channel".into(),
        mode: "remove".into(),
        ratio: 0.3,
        ..Default::default()
    })
    .unwrap();
    let runs = 5;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let mut m = m0.clone();
        let t = Instant::now();
        let (report, out) = p.prune(&mut m).unwrap();
        times.push(t.elapsed().as_secs_f64());
        m.verify().unwrap();
        last = Some((report, out));
    }
    times.sort_by(f64::total_cmp);
    let (report, out) = last.unwrap();
    let c = out.channel.unwrap();
    println!(
        "{convs} {:.6} {} {} {} {}",
        times[runs / 2],
        hwm_kib(),
        report.stats.get("groups").copied().unwrap_or(0),
        c.params_total_before,
        c.params_total_after
    );
}

fn main() {
    if let Ok(n) = std::env::var("PRUNE_BENCH_CHILD") {
        child(n.parse().unwrap());
        return;
    }
    let mut t = Vec::new();
    println!("convs  median time (s)  peak RSS (MiB)  groups  params before -> after");
    for convs in [200usize, 400] {
        let out = Command::new(std::env::current_exe().unwrap())
            .env("PRUNE_BENCH_CHILD", convs.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let f: Vec<&str> = line.split_whitespace().collect();
        let secs: f64 = f[1].parse().unwrap();
        let kib: f64 = f[2].parse().unwrap();
        println!(
            "{convs:5}  {secs:15.4}  {:14.1}  {:6}  {} -> {}",
            kib / 1024.0,
            f[3],
            f[4],
            f[5]
        );
        t.push(secs);
    }
    println!(
        "time ratio 400 / 200 convs: {:.2} (target <= 2.2)",
        t[1] / t[0]
    );
}
