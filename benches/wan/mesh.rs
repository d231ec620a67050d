//! Mesh nodes in this process: an origin `a` and an exit `b` whose link crosses an
//! emulator, TCP in at `a` and out at `b` to a hashing sink.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use proxy::Node;
use proxy::emulator::LinkEmulator;

use crate::Ctx;
use crate::common;
use crate::net::{Wan, emulate};
use crate::report::Run;
use crate::traffic::{Sink, sampled, sink, tcp_upload, timed};

/// Starts node `id` with the bench's mesh keys and congestion controller `cc`.
pub async fn node(ctx: &Ctx, id: &str, cc: &str, body: &str) -> Result<Node> {
    node_with(ctx, id, cc, body, "").await
}

/// [`node`] with more `mesh:` keys (`key: value, ...`).
pub async fn node_with(ctx: &Ctx, id: &str, cc: &str, body: &str, mesh_extra: &str) -> Result<Node> {
    let mut keys = ctx.opts.mesh_keys(Some(cc));
    if !mesh_extra.is_empty() {
        keys = format!("{keys}, {mesh_extra}");
    }
    common::node(&ctx.dir, id, body, &keys).await
}

/// The address of `node`'s listener `name`.
pub fn entry(node: &Node, name: &str) -> Result<SocketAddr> {
    node.listeners().into_iter().find(|l| l.name == name).map(|l| l.addr).context("no such listener")
}

/// Waits until every `(node, peer)` link is up.
pub async fn wait_links(links: &[(&Node, &str)]) -> Result<()> {
    for (n, p) in links {
        anyhow::ensure!(
            n.wait_for_link(p, Duration::from_secs(15)).await,
            "link {} -> {p} did not come up",
            n.id()
        );
    }
    Ok(())
}

/// A listener per name, each with a route of the same name to `target` leaving at `exit`
/// (`extra`: more route keys, like `via: [b]`).
pub fn listeners_and_routes(routes: &[(&str, SocketAddr, &str, &str)]) -> String {
    let mut s = String::from("listeners:\n");
    for (name, ..) in routes {
        s += &format!("  - {{ name: {name}, bind: \"127.0.0.1:0\" }}\n");
    }
    s += "routes:\n";
    for (name, target, exit, extra) in routes {
        let extra = if extra.is_empty() { String::new() } else { format!(", {extra}") };
        s += &format!(
            "  - {{ name: {name}, match: {{ listener: {name} }}, target: \"{target}\", exit: {exit}{extra} }}\n"
        );
    }
    s
}

/// An exit policy allowing exactly `targets`.
pub fn allow(targets: &[SocketAddr]) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!("exit_policy: {{ allow: [{}] }}\n", list.join(", "))
}

/// Packets sent and lost by `node` on its link to `peer`, as its stats give them: the
/// loss ratio is quinn's lost / sent packets; the packet count is the emulator's (every
/// packet of that link crosses it).
fn link_counts(node: &Node, peer: &str, emu: &LinkEmulator) -> (f64, u64) {
    let sent = emu.stats().a_to_b.received;
    let info = node.peers().into_iter().find(|p| p.id == peer);
    let lost = info.as_ref().and_then(|p| p.loss).unwrap_or(0.0) * sent as f64;
    (lost, info.and_then(|p| p.bytes_sent).unwrap_or(0))
}

/// Two nodes, `a` -> `b`, across an emulator; `a`'s listener `bulk` leads to a sink behind
/// `b`, and `others` (name, target) add more listeners and targets.
pub struct Pair {
    /// The origin.
    pub a: Node,
    /// The exit.
    pub b: Node,
    /// Between them.
    pub emu: LinkEmulator,
    /// The sink of `bulk`.
    pub sink: Sink,
    wan: Wan,
}

impl Pair {
    /// Starts both nodes and waits for the link.
    pub async fn start(ctx: &Ctx, cc: &str, wan: Wan, others: &[(&str, SocketAddr)]) -> Result<Pair> {
        Self::start_with(ctx, cc, wan, others, "").await
    }

    /// [`Pair::start`] with more `mesh:` keys on both nodes.
    pub async fn start_with(
        ctx: &Ctx,
        cc: &str,
        wan: Wan,
        others: &[(&str, SocketAddr)],
        mesh_extra: &str,
    ) -> Result<Pair> {
        let sink = sink().await?;
        let mut targets = vec![sink.addr];
        targets.extend(others.iter().map(|o| o.1));
        let b =
            node_with(ctx, "b", cc, &format!("peers: [ {{ name: a }} ]\n{}", allow(&targets)), mesh_extra)
                .await?;
        let emu = emulate(b.mesh_addr()?, wan, ctx.opts.buffer_bdp).await?;
        let mut routes = vec![("bulk", sink.addr, "b", "")];
        routes.extend(others.iter().map(|(n, t)| (*n, *t, "b", "")));
        let body = format!(
            "peers: [ {{ name: b, address: \"{}\" }} ]\n{}",
            emu.addr(),
            listeners_and_routes(&routes)
        );
        let a = node_with(ctx, "a", cc, &body, mesh_extra).await?;
        wait_links(&[(&a, "b"), (&b, "a")]).await?;
        Ok(Pair { a, b, emu, sink, wan })
    }

    /// One flow of `len` bytes from `a`'s `bulk` listener to the sink, cut at `limit`.
    pub async fn upload(&self, len: u64, limit: Duration) -> Result<Run> {
        let entry = entry(&self.a, "bulk")?;
        let (lost0, bytes0) = link_counts(&self.a, "b", &self.emu);
        let transfer = timed(tcp_upload(entry, len), len, &self.sink.received, limit);
        let rtt = || self.a.peers().into_iter().find(|p| p.id == "b").and_then(|p| p.rtt_ms);
        let (t, rtt_ms) = sampled(transfer, rtt).await;
        let (lost1, bytes1) = link_counts(&self.a, "b", &self.emu);
        let wire = bytes1.saturating_sub(bytes0);
        let sent_pkts = (self.emu.stats().a_to_b.received as f64).max(1.0);
        // Lost packets times the mean packet size of the transfer.
        let mean_packet = bytes1 as f64 / sent_pkts;
        Ok(Run {
            t: t?,
            resent: ((lost1 - lost0).max(0.0) * mean_packet) as u64,
            wire,
            rtt_ms,
            base_rtt_ms: self.wan.rtt_ms as f64,
        })
    }

    /// Stops both nodes at once.
    pub fn close(self) {
        self.a.abort();
        self.b.abort();
    }
}
