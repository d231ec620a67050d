//! Section 6: one flow striped over two lossy WAN paths, a -> {b | c} -> d (the a-b and
//! a-c links emulated, b-d and c-d direct), against the same flow over one path.

use anyhow::Result;
use proxy::Node;

use crate::Ctx;
use crate::mesh::{allow, entry, listeners_and_routes, node, wait_links};
use crate::net::{Wan, emulate};
use crate::report::{Table, pct, ratio};
use crate::traffic::{Sink, sink, tcp_upload, timed};

const WAN: Wan = Wan { rtt_ms: 40, loss_pct: 0.5, mbit: Some(100) };

/// Runs the section, once per mesh congestion variant.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("6. multipath: a -> {{b | c}} -> d, each a-side link {}", WAN.label());
    let t = Table::new(&[("run", 28), ("Mbit/s", 10), ("of one link", 11), ("vs one path", 11)]);
    for cc in ctx.opts.mesh_variants() {
        variant(ctx, &t, &cc).await?;
    }
    Ok(())
}

async fn variant(ctx: &Ctx, t: &Table, cc: &str) -> Result<()> {
    let sink = sink().await?;
    let d = node(ctx, "d", cc, &format!("peers: [ {{ name: b }}, {{ name: c }} ]\n{}", allow(&[sink.addr])))
        .await?;
    let relay = |id: &'static str| {
        let body =
            d.mesh_addr().map(|m| format!("peers: [ {{ name: a }}, {{ name: d, address: \"{m}\" }} ]"));
        async move { node(ctx, id, cc, &body?).await }
    };
    let (b, c) = (relay("b").await?, relay("c").await?);
    let ab = emulate(b.mesh_addr()?, WAN, ctx.opts.buffer_bdp).await?;
    let ac = emulate(c.mesh_addr()?, WAN, ctx.opts.buffer_bdp).await?;
    let routes = listeners_and_routes(&[
        ("one", sink.addr, "d", "via: [b]"),
        ("mp", sink.addr, "d", "paths: [[b], [c]], multipath: true"),
    ]);
    let body = format!(
        "peers: [ {{ name: b, address: \"{}\" }}, {{ name: c, address: \"{}\" }} ]\n{routes}",
        ab.addr(),
        ac.addr()
    );
    let a = node(ctx, "a", cc, &body).await?;
    let result = measure(ctx, t, cc, [&a, &b, &c], &sink).await;
    for n in [a, b, c, d] {
        n.abort();
    }
    result
}

async fn measure(ctx: &Ctx, t: &Table, cc: &str, [a, b, c]: [&Node; 3], sink: &Sink) -> Result<()> {
    wait_links(&[(a, "b"), (a, "c"), (b, "d"), (c, "d")]).await?;
    let len = ctx.opts.bulk_len(100);
    let name = cc;
    let one = timed(tcp_upload(entry(a, "one")?, len), len, &sink.received, ctx.opts.timeout).await?;
    let mp = timed(tcp_upload(entry(a, "mp")?, len), len, &sink.received, ctx.opts.timeout).await?;
    t.row(&[format!("mesh {name}, one path"), one.cell(), pct(one.mbit() / 100.0), "1.00x".into()]);
    t.row(&[
        format!("mesh {name}, multipath"),
        mp.cell(),
        pct(mp.mbit() / 100.0),
        ratio(mp.mbit(), one.mbit()),
    ]);
    Ok(())
}
