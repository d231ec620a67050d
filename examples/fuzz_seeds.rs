//! `cargo run --example fuzz_seeds`: writes the seed inputs of every fuzz target
//! (`proxy::fuzzing::seeds`) to `fuzz/corpus/<target>/seed-<n>`, the corpora `fuzz/run.sh`
//! starts from and `cargo test` replays.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut counts = std::collections::BTreeMap::new();
    for (target, bytes) in proxy::fuzzing::seeds() {
        let n = counts.entry(target).or_insert(0);
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{n}")), bytes)?;
        *n += 1;
    }
    for (target, n) in counts {
        println!("{target}: {n} seed(s)");
    }
    Ok(())
}
