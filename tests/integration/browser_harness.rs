//! The headless-Chromium driver of `tests/integration/common/browser.rs` on its own: a page served from
//! loopback, a click whose effect comes later, typing, Enter, a screenshot, and errors
//! (JavaScript exceptions from `eval`, page errors collected, waits that time out).

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::launch_or_skip;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The page: the button's effect shows up 300 ms after the click; the input echoes what is
/// typed; the form shows what was submitted.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title></head>
<body>
<h1 id="status">idle</h1>
<button id="go">Go</button>
<input id="name"><p id="echo"></p>
<form id="form"><input id="query" name="query"></form><p id="submitted"></p>
<script>
const $ = (id) => document.getElementById(id);
$('go').addEventListener('click', () => setTimeout(() => { $('status').textContent = 'clicked'; }, 300));
$('name').addEventListener('input', (e) => { $('echo').textContent = 'hello ' + e.target.value; });
$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  $('submitted').textContent = 'submitted ' + $('query').value;
});
</script>
</body></html>
"#;

/// How long the page's effects may take to show: generous, they take 300 ms at most.
const WAIT: Duration = Duration::from_secs(10);

/// Serves `PAGE` at `/` (404 elsewhere) on loopback, one response per connection.
async fn serve_page() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                // Chromium also opens connections it sends nothing on (preconnects).
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let read_head = async {
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    true
                };
                if !tokio::time::timeout(Duration::from_secs(30), read_head).await.unwrap_or(false) {
                    return;
                }
                let (status, body) =
                    if request.starts_with(b"GET / ") { ("200 OK", PAGE) } else { ("404 Not Found", "") };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Where screenshots go: `$CARGO_TARGET_DIR/screenshots`, else `target/screenshots`.
fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("screenshots").join(name)
}

/// The served page driven end to end, from a tokio test: the server on the runtime, the
/// (blocking) browser in `spawn_blocking`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_type_submit_screenshot() {
    let addr = serve_page().await;
    tokio::task::spawn_blocking(move || {
        let Some(browser) = launch_or_skip() else { return };
        let page = browser.new_page(800, 600).expect("new page");
        page.goto(&format!("http://{addr}/")).expect("goto");
        assert_eq!(page.eval("document.title").expect("title"), json!("harness"));
        assert_eq!(page.eval("[window.innerWidth, window.innerHeight]").expect("size"), json!([800, 600]));
        assert_eq!(page.eval("Promise.resolve(6 * 7)").expect("promise"), json!(42));
        assert_eq!(page.eval("undefined").expect("undefined"), json!(null));

        page.click("#go").expect("click");
        assert_eq!(page.eval("document.getElementById('status').textContent").expect("eval"), json!("idle"));
        page.wait_for("document.getElementById('status').textContent === 'clicked'", WAIT)
            .expect("the click");

        page.fill("#name", "wörld \"quoted\"").expect("fill");
        page.wait_for("document.getElementById('echo').textContent === 'hello wörld \"quoted\"'", WAIT)
            .expect("the input event");

        page.fill("#query", "mesh").expect("fill");
        page.press_enter("#query").expect("enter");
        page.wait_for("document.getElementById('submitted').textContent === 'submitted mesh'", WAIT)
            .expect("the form's submission");

        let path = screenshot_path("harness.png");
        page.screenshot(&path).expect("screenshot");
        let png = std::fs::read(&path).expect("read the screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {:?}", &png[..png.len().min(16)]);
        // The IHDR chunk: the image is the viewport.
        let width = u32::from_be_bytes(png[16..20].try_into().expect("width"));
        let height = u32::from_be_bytes(png[20..24].try_into().expect("height"));
        assert_eq!((width, height), (800, 600));

        assert_eq!(page.js_errors(), Vec::<String>::new());
    })
    .await
    .expect("the browser thread");
}

/// Errors come back as errors: a throwing `eval`, a missing element, a wait that times
/// out, a page that cannot load; and the page's own errors are collected.
#[test]
fn errors_are_reported() {
    let Some(browser) = launch_or_skip() else { return };
    let page = browser.new_page(400, 300).expect("new page");

    let e = page.eval("throw new Error('boom')").expect_err("a throw is an error");
    assert!(e.contains("boom"), "{e}");
    let e = page.eval("Promise.reject(new TypeError('rejected'))").expect_err("a rejection is an error");
    assert!(e.contains("TypeError") && e.contains("rejected"), "{e}");
    let e = page.eval("no_such_variable").expect_err("a ReferenceError is an error");
    assert!(e.contains("ReferenceError"), "{e}");

    let e = page.click("#nothing").expect_err("no element");
    assert!(e.contains("no element matches #nothing"), "{e}");

    let e = page.wait_for("document.title.length", Duration::from_millis(300)).expect_err("never true");
    assert!(e.contains("document.title.length") && e.contains("last value: 0"), "{e}");

    // A navigation that cannot happen (port 1 is on the browser's list of unsafe ports, so
    // no other test can make it answer) comes back as an error naming the reason.
    let e = page.goto("http://127.0.0.1:1/").expect_err("refused");
    assert!(e.contains("ERR_"), "{e}");

    // Errors the page makes on its own are collected (not those of `eval`, returned above).
    assert_eq!(page.js_errors(), Vec::<String>::new());
    page.eval("setTimeout(() => { throw new Error('late boom'); }, 0); console.error('logged', 42)")
        .expect("eval");
    let deadline = Instant::now() + WAIT;
    while page.js_errors().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let errors = page.js_errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("console.error: logged 42")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("exception:") && e.contains("late boom")), "{errors:?}");

    // A second page works alongside, with its own errors.
    let other = browser.new_page(320, 200).expect("second page");
    assert_eq!(other.eval("window.innerWidth").expect("width"), json!(320));
    assert_eq!(other.js_errors(), Vec::<String>::new());
}
