//! Output-filter throughput on ordinary text (this crate's own sources and
//! README, repeated to 8 MiB) and on text dense with secrets.
//! Run: `cargo bench --bench redact`. Target: ≥ 200 MB/s on ordinary text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use toolgate::filter::Redactor;

const ORDINARY: &[&str] = &[
    include_str!("../README.md"),
    include_str!("../src/executor.rs"),
    include_str!("../src/policy/mod.rs"),
    include_str!("../src/policy/shell.rs"),
    include_str!("../src/sandbox/wasm/mod.rs"),
    include_str!("../Cargo.lock"),
];

fn corpus(target: usize) -> String {
    let mut s = String::new();
    while s.len() < target {
        for part in ORDINARY {
            s.push_str(part);
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let r = Redactor::with(&["Zk9Lw2Xp7Vb4Nm1H-host".to_string()], Some(&[])).unwrap();
    let text = corpus(8 << 20);
    let mut g = c.benchmark_group("redact");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("ordinary_text_8MiB", |b| {
        b.iter(|| black_box(r.redact(black_box(&text))))
    });
    let dense: String = (0..20_000)
        .map(|i| {
            format!(
                "line {i} token=ghp_3kQ9vZp2Lx7Wm4Rt8Yb1Nc6Hd0Js5Fa2Ue9G AKIAZ7GQ2XWJ4TLYRN3M ok\n"
            )
        })
        .collect();
    g.throughput(Throughput::Bytes(dense.len() as u64));
    g.bench_function("secret_dense", |b| {
        b.iter(|| black_box(r.redact(black_box(&dense))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
