//! `proxy demo`: a five-region mesh on loopback that shows, live, what the overlay does.
//!
//! It starts a scheduler and five nodes whose links run through emulators with real
//! inter-region round trips, with an echo service behind the Tokyo node. It waits for the
//! scheduler to find the detours the matrix hides, measures each route against its
//! direct path, degrades a link and watches a route move, then kills a relay in the middle
//! of a multipath transfer and checks that new flows go around it and that the transfer
//! arrives byte for byte. Last, it sends a bulk transfer over a lossy intercontinental
//! link with the mesh's own congestion controller and, for contrast, with CUBIC (what
//! plain TCP would get). Every step is a check; the command fails if one did not happen.

pub mod cluster;
pub mod probe;
pub mod regions;
pub mod table;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use cluster::{BULK, Cluster, DIRECT, STEERED};
use probe::Capped;
use regions::{DEGRADED, EXIT, LOSSY, MULTIPATH_ORIGIN, NODES, RELAY_KILLED};

use crate::config::Congestion;
use table::RouteRow;

/// How the demo runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoOptions {
    /// A shorter run for CI: a smaller transfer, no pauses to read.
    pub quick: bool,
    /// Leave the cluster running at the end and print each node's admin address.
    pub keep: bool,
}

/// One thing the demo set out to show, and whether it happened.
#[derive(Debug, Clone)]
pub struct Check {
    /// What should have happened.
    pub what: String,
    /// Whether it did.
    pub ok: bool,
}

/// The longest each step may take before its check fails.
const STEP: Duration = Duration::from_secs(20);
/// The whole scenario, start to summary: the demo exits within a minute.
const DEADLINE: Duration = Duration::from_secs(55);
/// Flows per round-trip measurement (the shortest counts).
const SAMPLES: usize = 5;
/// How long one sample flow may take.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The bulk transfer over the lossy link, each way: big enough that the controller, not
/// the start of the connection, sets the rate; small enough for the minute.
const LOSSY_LEN: usize = 16 << 20;
const LOSSY_LEN_QUICK: usize = 4 << 20;
/// How long the mesh's own controller may take for it (it needs about 2 s, 1 s quick).
const LOSSY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the CUBIC contrast runs at most: over this link it would take minutes, and
/// the rate it holds shows well before.
const CUBIC_CAP: Duration = Duration::from_secs(8);
const CUBIC_CAP_QUICK: Duration = Duration::from_secs(4);

/// Runs the demo; returns its checks (the caller fails when one is not ok). Ctrl-C, or the
/// one-minute deadline, ends it early with the cluster cleaned up.
pub async fn run(options: DemoOptions) -> anyhow::Result<Vec<Check>> {
    let started = Instant::now();
    let mut screen = Screen::new(options.quick);
    screen.say(&intro());
    let mut cluster = Cluster::start(&std::env::temp_dir()).await?;
    let mut checks = Vec::new();
    let finished = tokio::select! {
        r = tokio::time::timeout(DEADLINE, scenario(options, &mut cluster, &mut screen, &mut checks)) => r.is_ok(),
        _ = tokio::signal::ctrl_c() => {
            screen.say("\ninterrupted: stopping the cluster\n");
            cluster.stop().await;
            anyhow::bail!("interrupted");
        }
    };
    if !finished {
        screen.say(&format!("\nstopped: the scenario did not finish within {DEADLINE:?}\n"));
    }
    check(&mut checks, finished, "the whole scenario ran within a minute");
    screen.say("\n== Summary\n");
    for c in &checks {
        screen.say(&format!("  [{}] {}\n", if c.ok { "ok" } else { "FAILED" }, c.what));
    }
    screen.say(&format!("finished in {:.0} s\n", started.elapsed().as_secs_f64()));
    if options.keep {
        keep_running(&cluster).await;
    }
    cluster.stop().await;
    Ok(checks)
}

async fn scenario(options: DemoOptions, cluster: &mut Cluster, screen: &mut Screen, checks: &mut Vec<Check>) {
    let linked = wait_until(STEP, || cluster.all_linked()).await;
    check(checks, linked, "every pair of the 5 nodes linked (10 QUIC links through the emulators)");

    screen.say("\n== 1. The scheduler measures the links and picks paths\n");
    let converged =
        wait_live(screen, cluster, STEP, |rows| rows.iter().all(|r| r.path == expected_path(&r.origin, &[])))
            .await;
    check(
        checks,
        converged,
        "the scheduler found the best path for every route (two of them through a relay)",
    );
    let rows = measure(cluster, regions::origins()).await;
    screen.show("Measured round trips of new flows (connect, one byte there and back):", &rows);
    for origin in ["eu-central", MULTIPATH_ORIGIN] {
        let saved = rows
            .iter()
            .find(|r| r.origin == origin)
            .and_then(|r| Some(r.direct_ms? - r.chosen_ms?))
            .unwrap_or(0.0);
        // At least half of what the round-trip matrix promises.
        let mut best = vec![origin];
        let tail = expected_path(origin, &[]);
        best.extend(tail.iter().map(String::as_str));
        let promised = regions::rtt_ms(origin, EXIT).saturating_sub(regions::path_rtt_ms(&best));
        check(
            checks,
            saved >= promised as f64 / 2.0,
            &format!(
                "{origin}: the relay path saves time over direct ({saved:.0} ms; the matrix says {promised} ms)"
            ),
        );
    }
    screen.pause(options.quick).await;

    let (a, b, extra) = DEGRADED;
    screen.say(&format!("\n== 2. The {a} <-> {b} link degrades: +{extra} ms\n"));
    let through_b = current_rows(cluster).iter().any(|r| r.origin == a && r.path.iter().any(|n| n == b));
    cluster.degrade(a, b, extra);
    let moved = through_b
        && wait_live(screen, cluster, STEP, |rows| {
            rows.iter().any(|r| r.origin == a && !r.path.is_empty() && !r.path.iter().any(|n| n == b))
        })
        .await;
    check(checks, moved, &format!("{a}'s route, through {b} before, moved off the degraded link"));
    let rows = measure(cluster, regions::origins()).await;
    screen.show("After the change:", &rows);
    screen.pause(options.quick).await;

    screen.say(&format!(
        "\n== 3. A multipath transfer from {MULTIPATH_ORIGIN}, and relay {RELAY_KILLED} dies in the middle of it\n"
    ));
    let bulk_len = if options.quick { 8 << 20 } else { 32 << 20 };
    let Some(entry) = cluster.listener(MULTIPATH_ORIGIN, BULK) else {
        check(checks, false, "the multipath route has a listener");
        return;
    };
    let transfer = tokio::spawn(probe::bulk_flow(entry, bulk_len, Duration::from_secs(40)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    check(checks, !transfer.is_finished(), "the multipath transfer was still running when the relay died");
    cluster.kill(RELAY_KILLED);
    screen.say(&format!("{RELAY_KILLED} killed: its links went silent, then it stopped\n"));
    let around = wait_live(screen, cluster, STEP, |rows| {
        rows.iter().all(|r| !r.path.is_empty() && !r.path.iter().any(|n| n == RELAY_KILLED))
    })
    .await;
    check(checks, around, &format!("no route's new flows go through {RELAY_KILLED} any more"));
    let rows = measure(cluster, regions::origins().filter(|o| *o != RELAY_KILLED)).await;
    let reached = rows.iter().all(|r| r.chosen_ms.is_some());
    screen.show("New flows after the relay died:", &rows);
    check(checks, reached, "new flows from every origin still reach the service");
    let what = "the multipath transfer arrived byte for byte despite the lost relay";
    match transfer.await.unwrap_or_else(|e| Err(anyhow::anyhow!("{e}"))) {
        Ok(outcome) => {
            let mib = outcome.received as f64 / f64::from(1 << 20);
            screen.say(&format!(
                "multipath transfer: {mib:.0} MiB there and back in {:.1} s, {}\n",
                outcome.took.as_secs_f64(),
                if outcome.intact { "SHA-256 identical both ways" } else { "BYTES DIFFER" }
            ));
            check(checks, outcome.intact, what);
        }
        Err(e) => {
            screen.say(&format!("multipath transfer failed: {e:#}\n"));
            check(checks, false, what);
        }
    }
    let lost = cluster.nodes.get(MULTIPATH_ORIGIN).map(|origin| {
        let m = origin.stats().multipath;
        screen.say(&format!(
            "{MULTIPATH_ORIGIN}'s subflows: {} opened, {} lost, {} replaced; {} bytes sent again\n",
            m.subflows_opened, m.subflows_lost, m.subflows_replaced, m.bytes_resent
        ));
        m.subflows_lost
    });
    check(
        checks,
        lost.is_some_and(|l| l >= 1),
        &format!("the transfer lost its subflow through {RELAY_KILLED} and carried on without it"),
    );
    screen.pause(options.quick).await;

    lossy_transfer(options, cluster, screen, checks).await;
}

/// Step 4: the same bulk transfer over two copies of the lossy link, one with the mesh's
/// controller (checked byte for byte), one with CUBIC (capped: it is the contrast).
async fn lossy_transfer(
    options: DemoOptions,
    cluster: &Cluster,
    screen: &mut Screen,
    checks: &mut Vec<Check>,
) {
    let (len, cap) = if options.quick { (LOSSY_LEN_QUICK, CUBIC_CAP_QUICK) } else { (LOSSY_LEN, CUBIC_CAP) };
    let mib = len >> 20;
    screen.say(&format!(
        "\n== 4. A bulk transfer over a lossy intercontinental link: what the congestion controller does\n\
         link: {} <-> {}, {} ms round trip, {}% loss and {} Mbit/s each way (emulated, apart from the\n\
         \x20     cluster; a fresh pair of nodes per controller, {mib} MiB there and back through each)\n",
        LOSSY.a, LOSSY.b, LOSSY.rtt_ms, LOSSY.loss_pct, LOSSY.mbit
    ));
    let model = Congestion::Model;
    let what =
        format!("{mib} MiB over the lossy link with the `{}` controller arrived byte for byte", model.name());
    let rate = |bytes: usize, d: Duration| bytes as f64 * 8.0 / d.as_secs_f64().max(1e-3) / 1e6;
    let ours = match run_lossy(cluster, model, len, LOSSY_TIMEOUT).await {
        Ok(Capped::Done(o)) => {
            screen.say(&format!(
                "  {:<22} {mib} MiB in {:.1} s, {:.0} Mbit/s each way, {}\n",
                "model (mesh default):",
                o.took.as_secs_f64(),
                rate(o.received, o.took),
                if o.intact { "SHA-256 identical both ways" } else { "BYTES DIFFER" }
            ));
            check(checks, o.intact, &what);
            o.intact.then(|| rate(o.received, o.took))
        }
        Ok(Capped::GaveUp { received, after }) => {
            screen.say(&format!(
                "  model: not finished after {:.0} s ({:.1} of {mib} MiB back)\n",
                after.as_secs_f64(),
                received as f64 / f64::from(1 << 20)
            ));
            check(checks, false, &what);
            None
        }
        Err(e) => {
            screen.say(&format!("  model: the transfer failed: {e:#}\n"));
            check(checks, false, &what);
            None
        }
    };
    let cubic = Congestion::Cubic;
    let label = "cubic (as TCP would):";
    let theirs = match run_lossy(cluster, cubic, len, cap).await {
        Ok(Capped::Done(o)) => {
            screen.say(&format!(
                "  {label:<22} {mib} MiB in {:.1} s, {:.1} Mbit/s each way, {}\n",
                o.took.as_secs_f64(),
                rate(o.received, o.took),
                if o.intact { "SHA-256 identical both ways" } else { "BYTES DIFFER" }
            ));
            check(
                checks,
                o.intact,
                &format!("the same transfer with `{}` arrived byte for byte", cubic.name()),
            );
            Some(rate(o.received, o.took))
        }
        Ok(Capped::GaveUp { received, after }) => {
            let got = rate(received, after);
            screen.say(&format!(
                "  {label:<22} gave up after {:.0} s at {got:.1} Mbit/s ({:.1} of {mib} MiB back)\n",
                after.as_secs_f64(),
                received as f64 / f64::from(1 << 20)
            ));
            Some(got)
        }
        // The contrast is not what the demo checks: say why it is missing and go on.
        Err(e) => {
            screen.say(&format!("  {label:<22} did not run: {e:#}\n"));
            None
        }
    };
    if let (Some(ours), Some(theirs)) = (ours, theirs)
        && theirs > 0.0
    {
        screen.say(&format!(
            "`{}` got {:.0}x CUBIC's rate: it paces at the bandwidth it measures and does not take\n\
             random loss for congestion; CUBIC shrinks its window at every loss\n",
            model.name(),
            ours / theirs
        ));
    }
}

/// One bulk transfer of `len` bytes across a new [`cluster::LossyPair`] with `congestion`,
/// given up at `cap`; the pair stops when it returns.
async fn run_lossy(
    cluster: &Cluster,
    congestion: Congestion,
    len: usize,
    cap: Duration,
) -> anyhow::Result<Capped> {
    let pair = cluster.lossy_pair(congestion).await?;
    probe::bulk_flow_capped(pair.entry, len, cap).await
}

fn check(checks: &mut Vec<Check>, ok: bool, what: &str) {
    checks.push(Check { what: what.to_string(), ok });
}

/// The path (after the origin, exit last) with the lowest round trip over at most two
/// relays, leaving out `dead` nodes: what the scheduler should settle on.
pub fn expected_path(origin: &str, dead: &[&str]) -> Vec<String> {
    let usable: Vec<&str> =
        NODES.iter().copied().filter(|n| *n != origin && *n != EXIT && !dead.contains(n)).collect();
    let mut best: (u64, Vec<&str>) = (regions::rtt_ms(origin, EXIT), vec![]);
    for &r1 in &usable {
        let one = regions::path_rtt_ms(&[origin, r1, EXIT]);
        if one < best.0 {
            best = (one, vec![r1]);
        }
        for &r2 in usable.iter().filter(|r| **r != r1) {
            let two = regions::path_rtt_ms(&[origin, r1, r2, EXIT]);
            if two < best.0 {
                best = (two, vec![r1, r2]);
            }
        }
    }
    best.1.into_iter().chain([EXIT]).map(str::to_string).collect()
}

/// Each origin's steered route as it stands (no measurements).
fn current_rows(cluster: &Cluster) -> Vec<RouteRow> {
    regions::origins()
        .filter_map(|o| cluster.nodes.get(o).map(|n| (o, n)))
        .map(|(origin, node)| RouteRow {
            origin: origin.to_string(),
            path: node
                .routes()
                .into_iter()
                .find(|r| r.name == "backend")
                .map(|r| r.active_path)
                .unwrap_or_default(),
            direct_ms: None,
            chosen_ms: None,
        })
        .collect()
}

/// Each origin's route with both round trips measured.
async fn measure(cluster: &Cluster, origins: impl Iterator<Item = &'static str>) -> Vec<RouteRow> {
    let mut rows = Vec::new();
    let current = current_rows(cluster);
    for origin in origins {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let probe = |name| async move {
            match cluster.listener(origin, name) {
                Some(addr) => ms(probe::flow_rtt(addr, SAMPLES, SAMPLE_TIMEOUT).await),
                None => None,
            }
        };
        let path = current.iter().find(|r| r.origin == origin).map(|r| r.path.clone()).unwrap_or_default();
        rows.push(RouteRow {
            origin: origin.to_string(),
            path,
            direct_ms: probe(DIRECT).await,
            chosen_ms: probe(STEERED).await,
        });
    }
    rows
}

/// Redraws the current paths until `done` holds for them or `within` passes.
async fn wait_live(
    screen: &mut Screen,
    cluster: &Cluster,
    within: Duration,
    done: impl Fn(&[RouteRow]) -> bool,
) -> bool {
    let started = Instant::now();
    loop {
        let rows = current_rows(cluster);
        screen.live(&format!("paths now ({:.1} s):", started.elapsed().as_secs_f64()), &rows);
        if done(&rows) {
            screen.show(&format!("Paths, settled after {:.1} s:", started.elapsed().as_secs_f64()), &rows);
            return true;
        }
        if started.elapsed() >= within {
            screen.show("Paths (gave up waiting):", &rows);
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

async fn keep_running(cluster: &Cluster) {
    println!("\nThe cluster keeps running (Ctrl-C stops it). Admin APIs (`proxy status --admin ADDR`):");
    for (id, node) in &cluster.nodes {
        println!("  {id:<14} {}", node.admin_addr());
    }
    let scheduler = cluster.scheduler.admin_addr();
    println!("  scheduler      {scheduler}  (`PROXY_ADMIN_TOKEN=TOKEN proxy status --scheduler ADDR`)");
    println!("\nWeb console (the whole mesh): http://{scheduler}/");
    println!("  log in with the scheduler's admin token {} to create join tokens,", cluster.console_token);
    println!("  remove nodes and pin routes; each node serves its own view at http://ADDR/ above.");
    let _ = tokio::signal::ctrl_c().await;
}

fn intro() -> String {
    let mut lines = vec![vec!["round trip (ms)".to_string()]];
    lines[0].extend(NODES.iter().map(|n| n.to_string()));
    for a in NODES {
        let mut line = vec![a.to_string()];
        line.extend(
            NODES.iter().map(|b| if a == *b { "-".into() } else { regions::rtt_ms(a, b).to_string() }),
        );
        lines.push(line);
    }
    format!(
        "proxy demo: a scheduler and five nodes on loopback, their links through emulators\n\
         with these round trips; an echo service sits behind {EXIT}.\n\n{}",
        crate::text_table::align(&lines)
    )
}

/// The terminal: redraws a live view in place on a terminal; elsewhere (CI, a pipe)
/// prints only the settled tables.
struct Screen {
    live: bool,
    /// Everything said so far, redrawn above the live view.
    log: String,
}

impl Screen {
    fn new(quick: bool) -> Self {
        Self { live: !quick && std::io::stdout().is_terminal(), log: String::new() }
    }

    fn say(&mut self, text: &str) {
        self.log.push_str(text);
        print!("{text}");
        let _ = std::io::stdout().flush();
    }

    fn show(&mut self, title: &str, rows: &[RouteRow]) {
        if self.live {
            // Put the settled view where the live one was.
            print!("\x1b[2J\x1b[H{}", self.log);
        }
        self.say(&format!("{title}\n{}", table::render_routes(rows)));
    }

    fn live(&self, title: &str, rows: &[RouteRow]) {
        if self.live {
            print!("\x1b[2J\x1b[H{}{title}\n{}", self.log, table::render_routes(rows));
            let _ = std::io::stdout().flush();
        }
    }

    async fn pause(&self, quick: bool) {
        if !quick {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_paths_take_the_detours_and_avoid_dead_relays() {
        assert_eq!(expected_path("eu-central", &[]), ["ap-south", "ap-northeast"]);
        assert_eq!(expected_path("us-east", &[]), ["us-west", "ap-northeast"]);
        assert_eq!(expected_path("us-west", &[]), ["ap-northeast"]);
        assert_eq!(expected_path("us-east", &["us-west"]), ["ap-northeast"]);
    }
}
