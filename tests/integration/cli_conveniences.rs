//! The command line's conveniences, on the real binary: `--version` with the commit,
//! completion scripts and man pages generated from the parser, suggestions for typos, and
//! the environment variables `--help` names.

use crate::common;

use common::process::{proxy, temp};

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = proxy().args(args).env_remove("RUST_LOG").output().expect("run proxy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_version_names_the_commit_and_its_date() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    let version = out.trim();
    assert!(version.starts_with(&format!("proxy {} (", env!("CARGO_PKG_VERSION"))), "{version}");
    // A checkout builds with its commit: `proxy 0.1.0 (<hex> <YYYY-MM-DD>)`.
    let inner = version.split_once('(').and_then(|(_, r)| r.strip_suffix(')')).expect("parenthesised");
    let (commit, date) = inner.split_once(' ').expect("commit and date");
    if commit != "unknown" {
        assert!(commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()), "{version}");
        assert!(date.len() == 10 && date.as_bytes()[4] == b'-', "{version}");
    }
}

#[test]
fn completion_scripts_cover_every_command_and_option() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {err}");
        for word in ["scheduler", "mesh", "token", "log-level", "no-start", "completions"] {
            assert!(out.contains(word), "{shell} script lacks {word}");
        }
    }
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("possible values") && err.contains("bash"), "{err}");
}

#[test]
fn bash_accepts_the_completion_script() {
    let (_, script, _) = run(&["completions", "bash"]);
    let dir = temp("completions");
    let file = dir.join("proxy.bash");
    std::fs::write(&file, script).expect("write");
    let Ok(out) = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(". {} && complete -p proxy", file.display()))
        .output()
    else {
        eprintln!("bash is not installed: the script's syntax is not checked");
        return;
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("proxy"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn man_pages_are_roff_one_per_command() {
    let (code, out, _) = run(&["man"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with(".ie") || out.contains(".TH proxy"), "{}", &out[..out.len().min(200)]);
    assert!(
        out.contains("--log-level") || out.contains("\\-\\-log\\-level"),
        "the global options are listed"
    );
    let dir = temp("man");
    let (code, _, err) = run(&["man", "--dir", &dir.display().to_string()]);
    assert_eq!(code, Some(0), "{err}");
    for page in
        ["proxy.1", "proxy-run.1", "proxy-scheduler.1", "proxy-mesh-join.1", "proxy-mesh-token-create.1"]
    {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page} missing or not roff");
    }
    // `man` renders the page where it is installed.
    let rendered = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.join("proxy-run.1"))
        .env("MANPAGER", "cat")
        .output();
    if let Ok(out) = rendered
        && out.status.success()
    {
        assert!(String::from_utf8_lossy(&out.stdout).contains("config"), "man renders the page");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_typo_gets_a_suggestion_and_help_names_the_environment() {
    let (code, _, err) = run(&["schedular"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("similar") && err.contains("scheduler"), "{err}");
    let (code, _, err) = run(&["run", "--confg", "x.yaml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--config"), "{err}");
    let (_, help, _) = run(&["mesh", "join", "--help"]);
    assert!(help.contains("PROXY_JOIN_TOKEN"), "{help}");
    for command in ["status", "ping", "trace"] {
        let (_, help, _) = run(&[command, "--help"]);
        assert!(help.contains("PROXY_ADMIN_TOKEN"), "{command}: {help}");
    }
    let (_, help, _) = run(&["run", "--help"]);
    assert!(help.contains("RUST_LOG"), "{help}");
}

#[test]
fn a_join_token_from_the_environment_is_not_warned_about_and_two_sources_are_refused() {
    let dir = temp("join-token");
    let file = dir.join("token");
    std::fs::write(&file, "pxj1-nothing").expect("write");
    let out = proxy()
        .args(["mesh", "join", "--scheduler", "127.0.0.1:9", "--node-id", "x", "--region", "r", "--no-start"])
        .args(["--token", "pxj1-typed", "--token-file"])
        .arg(&file)
        .arg("--dir")
        .arg(&dir)
        .env_remove("PROXY_JOIN_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));
    let out = proxy()
        .args(["mesh", "join", "--scheduler", "127.0.0.1:9", "--node-id", "x", "--region", "r", "--no-start"])
        .arg("--dir")
        .arg(&dir)
        .env("PROXY_JOIN_TOKEN", "not-a-token")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning"), "{err}");
    assert_ne!(out.status.code(), Some(0), "a malformed token is refused: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The man pages and completion scripts the Debian package installs are generated files in
/// the repository (so `cargo deb` needs no built binary first); they must match what the
/// binary generates now.
#[test]
fn the_packaged_man_pages_and_completions_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    let regenerate = "regenerate: proxy man --dir packaging/man; proxy completions bash > packaging/completions/proxy.bash; \
                      ... zsh > packaging/completions/_proxy; ... fish > packaging/completions/proxy.fish";
    let dir = temp("man-current");
    let (code, _, err) = run(&["man", "--dir", &dir.display().to_string()]);
    assert_eq!(code, Some(0), "{err}");
    let names = |d: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(names(&dir), names(&root.join("man")), "{regenerate}");
    for page in names(&dir) {
        let now = std::fs::read_to_string(dir.join(&page)).expect("generated");
        let packaged = std::fs::read_to_string(root.join("man").join(&page)).unwrap_or_default();
        assert!(now == packaged, "packaging/man/{page} is out of date; {regenerate}");
    }
    for (shell, file) in [("bash", "proxy.bash"), ("zsh", "_proxy"), ("fish", "proxy.fish")] {
        let (_, now, _) = run(&["completions", shell]);
        let packaged = std::fs::read_to_string(root.join("completions").join(file)).unwrap_or_default();
        assert!(now == packaged, "packaging/completions/{file} is out of date; {regenerate}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
