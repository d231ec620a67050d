//! Headless Chromium for integration tests, driven over the Chrome DevTools Protocol (CDP).
//!
//! [`Browser::launch`] starts `/usr/bin/chromium` (or `chromium` on the PATH) headless with a
//! fresh profile in a temp dir and `--remote-debugging-port=0`, reads the DevTools WebSocket
//! address from its stderr, and connects to it. [`Browser::new_page`] opens a tab attached
//! in flat mode: every command of every page goes over the one browser socket, tagged with
//! the page's `sessionId`.
//!
//! The API is **synchronous** (blocking socket reads, each with a deadline). From a tokio
//! test, keep the servers on the runtime and drive the browser inside
//! `tokio::task::spawn_blocking` (or a std thread); `Browser` and `Page` are `Send`.
//!
//! Nothing waits forever: every command, navigation and [`Page::wait_for`] has its own
//! timeout, and tests wait on page state with [`Page::wait_for`], never with sleeps. Events
//! that arrive while a command waits for its reply are kept (per page), so a load event or
//! a JavaScript error is never lost. Dropping the browser closes Chromium (`Browser.close`,
//! then SIGKILL of its process group if it lingers), reaps it and deletes the profile.
//!
//! Tests start it with [`launch_or_skip`]: skipped outside CI when Chromium is missing,
//! failing in CI (where `.ci/run` installs it).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CDP command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`Page::goto`] waits for the load event.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`Page::wait_for`] evaluates its expression.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Events kept per session and not yet consumed; older ones are dropped beyond this.
const MAX_QUEUED_EVENTS: usize = 10_000;
/// Stderr lines of Chromium kept for error messages.
const STDERR_TAIL: usize = 40;

/// How the error of an `eval` that threw begins.
const JS_EXCEPTION: &str = "JavaScript exception: ";

static PROFILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where Chromium is: Debian's `/usr/bin/chromium`, else `chromium` or
/// `chromium-browser` on the PATH.
fn chromium_path() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("chromium"), dir.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// The one WebSocket to the browser, with the events read so far, per session.
struct Conn {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Events not consumed yet, by session id ("" for the browser itself).
    events: HashMap<String, VecDeque<Value>>,
    /// JavaScript exceptions, `console.error` calls and crashes, by session id.
    errors: HashMap<String, Vec<String>>,
    /// Set when the socket failed: every later call fails with it.
    broken: Option<String>,
}

impl Conn {
    /// Reads one message, waiting at most until `deadline`; `Ok(None)` on timeout.
    fn read_one(&mut self, deadline: Instant) -> Result<Option<Value>, String> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.ws
                .get_mut()
                .set_read_timeout(Some(left))
                .map_err(|e| format!("setting the DevTools socket's read timeout: {e}"))?;
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str())
                        .map(Some)
                        .map_err(|e| format!("DevTools sent invalid JSON ({e}): {}", text.as_str()));
                }
                Ok(Message::Close(frame)) => {
                    let e = format!("the DevTools socket was closed by Chromium: {frame:?}");
                    self.broken = Some(e.clone());
                    return Err(e);
                }
                // Pings are answered by tungstenite; binary frames are not part of CDP.
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    let e = format!("reading the DevTools socket: {e}");
                    self.broken = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }

    /// Files an event under its session; records errors as they come.
    fn keep_event(&mut self, event: Value) {
        let session = event.get("sessionId").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(error) = error_text(&event) {
            self.errors.entry(session.clone()).or_default().push(error);
        }
        let queue = self.events.entry(session).or_default();
        if queue.len() >= MAX_QUEUED_EVENTS {
            queue.pop_front();
        }
        queue.push_back(event);
    }

    /// Sends `method` to `session` (`None`: the browser) and waits for its reply, keeping
    /// the events read meanwhile. A CDP error reply becomes `Err`.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        if let Some(e) = &self.broken {
            return Err(format!("{method}: {e}"));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            command["sessionId"] = json!(s);
        }
        if let Err(e) = self.ws.send(Message::Text(command.to_string().into())) {
            let e = format!("sending {method} to DevTools: {e}");
            self.broken = Some(e.clone());
            return Err(e);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let Some(message) = self.read_one(deadline).map_err(|e| format!("{method}: {e}"))? else {
                return Err(format!("{method}: no reply from Chromium within {timeout:?}"));
            };
            match message.get("id").and_then(Value::as_u64) {
                // A reply: ours, or a late one to a command that timed out (dropped).
                Some(reply_id) if reply_id == id => {
                    if let Some(error) = message.get("error") {
                        return Err(format!("{method} failed: {error}"));
                    }
                    return Ok(message.get("result").cloned().unwrap_or(Value::Null));
                }
                Some(_) => continue,
                None => self.keep_event(message),
            }
        }
    }

    /// Takes the first kept event of `session` named `method`, reading the socket until
    /// `deadline`; `Ok(None)` when none came.
    fn wait_event(
        &mut self,
        session: &str,
        method: &str,
        deadline: Instant,
    ) -> Result<Option<Value>, String> {
        loop {
            if let Some(queue) = self.events.get_mut(session)
                && let Some(i) =
                    queue.iter().position(|e| e.get("method").and_then(Value::as_str) == Some(method))
            {
                return Ok(queue.remove(i));
            }
            match self.read_one(deadline)? {
                None => return Ok(None),
                Some(message) if message.get("id").is_some() => continue,
                Some(event) => self.keep_event(event),
            }
        }
    }

    /// Reads whatever has already arrived (up to a few milliseconds), keeping the events.
    fn pump(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_millis(5);
        while let Some(message) = self.read_one(deadline)? {
            if message.get("id").is_none() {
                self.keep_event(message);
            }
        }
        Ok(())
    }

    /// Drops the kept events of `session` named `method`.
    fn discard_events(&mut self, session: &str, method: &str) {
        if let Some(queue) = self.events.get_mut(session) {
            queue.retain(|e| e.get("method").and_then(Value::as_str) != Some(method));
        }
    }
}

/// The text of an event that reports a page error: an uncaught exception, a
/// `console.error` call, a crashed renderer; `None` for any other event.
fn error_text(event: &Value) -> Option<String> {
    let params = event.get("params").unwrap_or(&Value::Null);
    match event.get("method").and_then(Value::as_str)? {
        "Runtime.exceptionThrown" => {
            let details = params.get("exceptionDetails").unwrap_or(&Value::Null);
            let mut text = exception_text(details);
            if let Some(url) = details.get("url").and_then(Value::as_str).filter(|u| !u.is_empty()) {
                let line = details.get("lineNumber").and_then(Value::as_u64).unwrap_or(0) + 1;
                let column = details.get("columnNumber").and_then(Value::as_u64).unwrap_or(0) + 1;
                text += &format!(" ({url}:{line}:{column})");
            }
            Some(format!("exception: {text}"))
        }
        "Runtime.consoleAPICalled" if params.get("type").and_then(Value::as_str) == Some("error") => {
            let args = params.get("args").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            let parts: Vec<String> = args
                .iter()
                .map(|a| match a.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => a.get("description").and_then(Value::as_str).unwrap_or("?").to_string(),
                })
                .collect();
            Some(format!("console.error: {}", parts.join(" ")))
        }
        "Inspector.targetCrashed" => Some("the page's renderer crashed".to_string()),
        _ => None,
    }
}

/// The message of a CDP `ExceptionDetails`: the exception's description (message and
/// stack) when there is one, else its short text.
fn exception_text(details: &Value) -> String {
    let exception = details.get("exception").unwrap_or(&Value::Null);
    exception
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            exception.get("value").map(|v| format!("{} {v}", details["text"].as_str().unwrap_or("Uncaught")))
        })
        .or_else(|| details.get("text").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| details.to_string())
}

/// Locks the connection; a panic in another thread while it held the lock does not make
/// the connection unusable (its state stays consistent between messages).
fn lock(conn: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The Chromium process and its profile dir: on drop, given `grace` to exit by itself,
/// then its process group is killed; it is reaped and the profile deleted either way.
struct Process {
    child: Child,
    profile: PathBuf,
    grace: Duration,
}

impl Drop for Process {
    fn drop(&mut self) {
        let deadline = Instant::now() + self.grace;
        let mut exited = false;
        loop {
            if !matches!(self.child.try_wait(), Ok(None)) {
                exited = true;
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its renderers and helpers are in the process group it leads (started with
        // `process_group(0)`): killed too, in case one outlives it. A group id stays
        // unused while the group has members, so this signals only Chromium's processes.
        // SAFETY: kill(2) only sends a signal; no memory is involved.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A headless Chromium, closed, reaped and its profile deleted when dropped.
pub struct Browser {
    conn: Arc<Mutex<Conn>>,
    process: Process,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and connects to it. Fails with an
    /// install hint when Chromium is missing, and with Chromium's last stderr lines when it
    /// does not come up within 30 s.
    pub fn launch() -> Result<Browser, String> {
        Browser::launch_with_args(&[])
    }

    /// [`Browser::launch`] with extra command-line switches for Chromium (for instance
    /// `--proxy-server=...` or `--host-resolver-rules=...`).
    pub fn launch_with_args(extra: &[&str]) -> Result<Browser, String> {
        let program = chromium_path()
            .ok_or("chromium not found: install it (apt-get install -y chromium) — .ci/run does this")?;
        let profile = std::env::temp_dir().join(format!(
            "proxy-chromium-{}-{}",
            std::process::id(),
            PROFILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)
            .map_err(|e| format!("creating the profile dir {}: {e}", profile.display()))?;
        let mut command = Command::new(&program);
        command
            .args([
                "--headless=new",
                // Tests run as root, where Chromium refuses to start sandboxed.
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--metrics-recording-only",
                "--mute-audio",
                "--hide-scrollbars",
                // Timers of a page in the background run at full speed (setTimeout in tests).
                "--disable-background-timer-throttling",
                "--disable-backgrounding-occluded-windows",
                "--disable-renderer-backgrounding",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg("about:blank")
            // Chromium's other files (crash reports, caches) in the temp dir too, not in ~.
            .env("XDG_CONFIG_HOME", profile.join("xdg-config"))
            .env("XDG_CACHE_HOME", profile.join("xdg-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so its renderers can be killed with it if it hangs.
            .process_group(0);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(format!("starting {}: {e}", program.display()));
            }
        };
        // From here on, any error return kills and reaps it and deletes the profile.
        let mut process = Process { child, profile, grace: Duration::ZERO };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (url_tx, url_rx) = mpsc::channel();
        if let Some(stderr) = process.child.stderr.take() {
            let tail = stderr_tail.clone();
            // Reads stderr to its end, so Chromium never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some((_, url)) = line.split_once("DevTools listening on ") {
                        let _ = url_tx.send(url.trim().to_string());
                    }
                    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if tail.len() >= STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let url = url_rx.recv_timeout(LAUNCH_TIMEOUT).map_err(|e| {
            let why = match e {
                mpsc::RecvTimeoutError::Timeout => {
                    format!("did not print its DevTools address within {LAUNCH_TIMEOUT:?}")
                }
                mpsc::RecvTimeoutError::Disconnected => {
                    format!("exited ({:?}) before printing its DevTools address", process.child.try_wait())
                }
            };
            format!("chromium {why}; its stderr:\n{}", tail_text(&stderr_tail))
        })?;
        let ws =
            connect(&url).map_err(|e| format!("{e}; chromium's stderr:\n{}", tail_text(&stderr_tail)))?;
        let conn = Conn { ws, next_id: 1, events: HashMap::new(), errors: HashMap::new(), broken: None };
        let browser = Browser { conn: Arc::new(Mutex::new(conn)), process, stderr_tail };
        browser.call("Browser.getVersion", json!({}))?;
        Ok(browser)
    }

    /// Sends a browser-level CDP command and returns its result.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        lock(&self.conn).call(None, method, params, COMMAND_TIMEOUT)
    }

    /// Opens a blank tab with a `width` x `height` CSS-pixel viewport, its `Page` and
    /// `Runtime` domains enabled (load events, JavaScript errors).
    pub fn new_page(&self, width: u32, height: u32) -> Result<Page, String> {
        let target = self.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| format!("Target.createTarget: no targetId in {target}"))?
            .to_string();
        let attached =
            self.call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }))?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| format!("Target.attachToTarget: no sessionId in {attached}"))?
            .to_string();
        let page = Page { conn: self.conn.clone(), session, target_id };
        page.call("Page.enable", json!({}))?;
        page.call("Runtime.enable", json!({}))?;
        page.call("Inspector.enable", json!({}))?;
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        Ok(page)
    }

    /// Chromium's last stderr lines (for a failing test's message).
    pub fn stderr_tail(&self) -> String {
        tail_text(&self.stderr_tail)
    }
}

/// [`Browser::launch`] for a test: when Chromium is not installed, outside CI the test is
/// skipped loudly (`None`), in CI (`CI` set, where `.ci/run` installs it) it fails; any
/// other launch error fails the test.
pub fn launch_or_skip() -> Option<Browser> {
    if chromium_path().is_none() && std::env::var("CI").is_err() {
        eprintln!("SKIPPED: chromium is not installed (apt-get install -y chromium); this test did not run");
        return None;
    }
    match Browser::launch() {
        Ok(browser) => Some(browser),
        Err(e) => panic!("{e}"),
    }
}

/// The kept stderr lines, one string.
fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    tail.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Connects to the DevTools WebSocket at `url` (`ws://127.0.0.1:PORT/devtools/browser/ID`).
fn connect(url: &str) -> Result<WebSocket<TcpStream>, String> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("unexpected DevTools address {url:?}"))?;
    let stream =
        TcpStream::connect(authority).map_err(|e| format!("connecting to DevTools at {url}: {e}"))?;
    stream
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(COMMAND_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("configuring the DevTools socket: {e}"))?;
    let (ws, _) = tungstenite::client::client(url, stream)
        .map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
    Ok(ws)
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A clean close: Chromium ends and reaps its own renderers (nobody else may: the
        // container's init does not always reap orphans). `process` is dropped next.
        let close_timeout = Duration::from_secs(5);
        let started = Instant::now();
        let _ = lock(&self.conn).call(None, "Browser.close", json!({}), close_timeout);
        // It answered or closed the socket: it is shutting down, give it time. No answer at
        // all: it hangs, and is killed after a moment.
        let hung = started.elapsed() >= close_timeout;
        self.process.grace = Duration::from_secs(if hung { 1 } else { 10 });
    }
}

/// A tab of a [`Browser`]: its commands go over the browser's socket under its session.
/// Closed when dropped.
pub struct Page {
    conn: Arc<Mutex<Conn>>,
    session: String,
    target_id: String,
}

impl Page {
    /// Sends a CDP command to this page and returns its result.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.call_within(method, params, COMMAND_TIMEOUT)
    }

    /// [`Page::call`] with its own reply timeout.
    fn call_within(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, String> {
        lock(&self.conn).call(Some(&self.session), method, params, timeout)
    }

    /// Navigates to `url` and waits (up to 30 s) for its load event. Fails when the page
    /// cannot be loaded at all (connection refused, bad address). Not for a change of the
    /// `#fragment` only, which loads nothing (use [`Page::eval`] and [`Page::wait_for`]).
    pub fn goto(&self, url: &str) -> Result<(), String> {
        let mut conn = lock(&self.conn);
        conn.discard_events(&self.session, "Page.loadEventFired");
        let reply =
            conn.call(Some(&self.session), "Page.navigate", json!({ "url": url }), COMMAND_TIMEOUT)?;
        if let Some(error) = reply.get("errorText").and_then(Value::as_str) {
            return Err(format!("navigating to {url}: {error}"));
        }
        match conn.wait_event(&self.session, "Page.loadEventFired", Instant::now() + LOAD_TIMEOUT)? {
            Some(_) => Ok(()),
            None => Err(format!("{url}: no load event within {LOAD_TIMEOUT:?}")),
        }
    }

    /// Evaluates `js` in the page (awaiting it if it is a promise) and returns its value as
    /// JSON (`null` for `undefined`). A thrown exception is `Err` with its message.
    pub fn eval(&self, js: &str) -> Result<Value, String> {
        self.eval_within(js, COMMAND_TIMEOUT)
    }

    fn eval_within(&self, js: &str, timeout: Duration) -> Result<Value, String> {
        let reply = self.call_within(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true, "userGesture": true }),
            timeout,
        )?;
        if let Some(details) = reply.get("exceptionDetails") {
            return Err(format!("{JS_EXCEPTION}{}", exception_text(details)));
        }
        Ok(reply.get("result").and_then(|r| r.get("value")).cloned().unwrap_or(Value::Null))
    }

    /// Evaluates `js` every 50 ms until its value is truthy, for up to `timeout`. The error
    /// names the expression and its last value (or the exception it last threw); an
    /// exception is retried like a false value (the element may not exist yet), but a
    /// failure of the browser connection ends the wait at once.
    pub fn wait_for(&self, js: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // At least a second for the evaluation itself, even near the deadline.
            match self.eval_within(js, left.max(Duration::from_secs(1)).min(COMMAND_TIMEOUT)) {
                Ok(value) if truthy(&value) => return Ok(()),
                Ok(value) => last = value.to_string(),
                Err(e) if e.starts_with(JS_EXCEPTION) => last = e,
                Err(e) => return Err(format!("waiting for `{js}`: {e}")),
            }
            if Instant::now() + POLL_INTERVAL > deadline {
                return Err(format!("`{js}` still not true after {timeout:?}; last value: {last}"));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Clicks the first element matching the CSS `selector` (`element.click()`); fails
    /// when none does.
    pub fn click(&self, selector: &str) -> Result<(), String> {
        self.eval(&format!("{}.click()", element_js(selector)?)).map(|_| ())
    }

    /// Sets the value of the input matching `selector` to `text` and dispatches `input`
    /// and `change` events, as typing would; fails when no element matches.
    pub fn fill(&self, selector: &str, text: &str) -> Result<(), String> {
        let text = serde_json::to_string(text).map_err(|e| format!("encoding {text:?}: {e}"))?;
        self.eval(&format!(
            "(() => {{
                const e = {};
                e.focus();
                // The prototype's setter, so frameworks that wrap `value` see the change.
                const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(e), 'value')?.set;
                if (setter) setter.call(e, {text}); else e.value = {text};
                e.dispatchEvent(new Event('input', {{ bubbles: true }}));
                e.dispatchEvent(new Event('change', {{ bubbles: true }}));
            }})()",
            element_js(selector)?
        ))
        .map(|_| ())
    }

    /// Focuses the element matching `selector` and presses Enter as real key events
    /// (`Input.dispatchKeyEvent`), so a form's implicit submission happens too.
    pub fn press_enter(&self, selector: &str) -> Result<(), String> {
        self.eval(&format!("{}.focus()", element_js(selector)?))?;
        for kind in ["keyDown", "keyUp"] {
            let mut key = json!({
                "type": kind, "key": "Enter", "code": "Enter",
                "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13,
            });
            if kind == "keyDown" {
                key["text"] = json!("\r");
            }
            self.call("Input.dispatchKeyEvent", key)?;
        }
        Ok(())
    }

    /// Captures the viewport as a PNG into `path`, creating its parent directories.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let reply = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = reply["data"]
            .as_str()
            .ok_or_else(|| "Page.captureScreenshot: no data in the reply".to_string())?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("Page.captureScreenshot: bad base64: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// The JavaScript errors of this page so far: uncaught exceptions, `console.error`
    /// calls and renderer crashes, oldest first. A test asserts it is empty.
    pub fn js_errors(&self) -> Vec<String> {
        let mut conn = lock(&self.conn);
        let pumped = conn.pump();
        let mut errors = conn.errors.get(&self.session).cloned().unwrap_or_default();
        if let Err(e) = pumped {
            errors.push(format!("the browser connection failed: {e}"));
        }
        errors
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let mut conn = lock(&self.conn);
        let _ = conn.call(
            None,
            "Target.closeTarget",
            json!({ "targetId": self.target_id }),
            Duration::from_secs(5),
        );
        conn.events.remove(&self.session);
        conn.errors.remove(&self.session);
    }
}

/// A JavaScript expression for the first element matching `selector`, which throws
/// naming the selector when there is none.
fn element_js(selector: &str) -> Result<String, String> {
    let quoted = serde_json::to_string(selector).map_err(|e| format!("encoding {selector:?}: {e}"))?;
    Ok(format!(
        "(document.querySelector({quoted}) ?? (() => {{ throw new Error('no element matches ' + {quoted}); }})())"
    ))
}

/// JavaScript's truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
