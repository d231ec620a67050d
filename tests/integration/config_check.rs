//! Config checking end to end: every file in `tests/fixtures/bad_configs/` fails with the
//! errors its header names, every example node config in `config/` passes, and
//! `proxy check` reports both with the documented exit codes.
//!
//! A bad fixture starts with one or more lines `# expect: <key> <message substring>`.
//! Fixtures point at placeholder files in `tests/fixtures/certs/`: validation checks that
//! certificate files exist, not what is in them, and no real key is ever committed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files in `dir` whose names start with `prefix` and end in `.yaml`, sorted.
fn yaml_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with(prefix) && name.ends_with(".yaml")
        })
        .collect();
    files.sort();
    files
}

fn bad_fixtures() -> Vec<PathBuf> {
    yaml_files(&repo().join("tests/fixtures/bad_configs"), "")
}

/// Example node configs. Only `node-*.yaml`: `config/` may also hold configs of other
/// kinds (a scheduler's) that the node loader rightly refuses.
fn example_configs() -> Vec<PathBuf> {
    yaml_files(&repo().join("config"), "node-")
}

/// The `(key, message substring)` pairs of a fixture's `# expect:` header.
fn expectations(fixture: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixture).expect("read fixture");
    let expected: Vec<(String, String)> = text
        .lines()
        .map_while(|line| line.strip_prefix("# expect: "))
        .map(|rest| {
            let (key, needle) = rest.split_once(' ').unwrap_or((rest, ""));
            (key.to_owned(), needle.trim().to_owned())
        })
        .collect();
    assert!(!expected.is_empty(), "{} has no `# expect: <key> <message>` header", fixture.display());
    expected
}

/// A fresh directory under the system temp dir, unique to this process and `tag`.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("proxy-config-check-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Copies `config` to `<dir>/config/` and creates a placeholder file at every `cert`,
/// `key` and `ca` path it names, so that it validates without real certificates.
fn stage_example(config: &Path, dir: &Path) -> PathBuf {
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).expect("create config dir");
    let staged = config_dir.join(config.file_name().expect("file name"));
    std::fs::copy(config, &staged).expect("copy config");
    let text = std::fs::read_to_string(config).expect("read config");
    for line in text.lines() {
        let line = line.trim();
        let Some((key, value)) = line.split_once(':') else { continue };
        if !["cert", "key", "ca"].contains(&key) {
            continue;
        }
        let value = value.split(" #").next().unwrap_or_default().trim().trim_matches('"');
        let path = config_dir.join(value);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create cert dir");
        std::fs::write(&path, "placeholder").expect("write placeholder");
    }
    staged
}

fn proxy_check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("check")
        .arg("-c")
        .arg(config)
        .output()
        .expect("run the proxy binary")
}

#[test]
fn every_bad_fixture_fails_with_the_errors_it_names() {
    let fixtures = bad_fixtures();
    assert!(!fixtures.is_empty(), "no fixtures in tests/fixtures/bad_configs");
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let name = fixture.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let errors = match proxy::config::load(fixture) {
            Ok(_) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Err(errors) => errors,
        };
        for (key, needle) in expectations(fixture) {
            if !errors.errors.iter().any(|e| e.key == key && e.message.contains(&needle)) {
                failures.push(format!("{name}: no `{key}: ...{needle}...` in\n{errors}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_error_of_a_bad_fixture_has_a_line() {
    // The fixtures are block-style YAML, where every key can be found in the text.
    for fixture in bad_fixtures() {
        let Err(errors) = proxy::config::load(&fixture) else { continue };
        for e in &errors.errors {
            assert!(e.line.is_some(), "{}: {} has no line", fixture.display(), e.key);
        }
    }
}

#[test]
fn every_example_config_passes() {
    let examples = example_configs();
    assert!(!examples.is_empty(), "no config/node-*.yaml");
    let dir = temp_dir("examples");
    for example in &examples {
        let staged = stage_example(example, &dir);
        if let Err(errors) = proxy::config::load(&staged) {
            panic!("{} is refused:\n{errors}", example.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_pair_routes_from_a_through_b() {
    let dir = temp_dir("pair");
    let a = proxy::config::load(&stage_example(&repo().join("config/node-a.yaml"), &dir)).expect("node-a");
    let b = proxy::config::load(&stage_example(&repo().join("config/node-b.yaml"), &dir)).expect("node-b");
    assert_eq!(a.routes[0].exit.as_deref(), Some(b.common.node_id.as_str()));
    assert!(a.peers.iter().any(|p| p.name == b.common.node_id));
    assert!(b.peers.iter().any(|p| p.name == a.common.node_id));
    assert!(!b.exit_policy.is_deny_all(), "b must allow the target of a's route");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn proxy_check_exits_2_and_names_every_bad_key() {
    let fixture = repo().join("tests/fixtures/bad_configs/many_errors.yaml");
    let out = proxy_check(&fixture);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("many_errors.yaml"), "the file is not named:\n{stderr}");
    for (key, needle) in expectations(&fixture) {
        assert!(stderr.contains(&key) && stderr.contains(&needle), "`{key}` missing:\n{stderr}");
    }
}

#[test]
fn proxy_check_exits_0_for_an_example_config() {
    let dir = temp_dir("cli");
    let staged = stage_example(&repo().join("config/node-a.yaml"), &dir);
    let out = proxy_check(&staged);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
