//! Section 4: does a relay help on a lossy path? a -> b -> c over two 40 ms hops with
//! 0.5% loss each against a -> c over 80 ms with 1% loss, all 100 Mbit/s.

use anyhow::Result;
use proxy::Node;

use crate::Ctx;
use crate::mesh::{allow, entry, listeners_and_routes, node, wait_links};
use crate::net::{Wan, emulate};
use crate::report::{Table, pct, ratio};
use crate::traffic::{Sink, sink, tcp_upload, timed};

const HOP: Wan = Wan { rtt_ms: 40, loss_pct: 0.5, mbit: Some(100) };
const DIRECT: Wan = Wan { rtt_ms: 80, loss_pct: 1.0, mbit: Some(100) };

/// Runs the section, once per mesh congestion variant.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("4. relay: a -> b -> c, hops {} each, against a -> c direct, {}", HOP.label(), DIRECT.label());
    let t = Table::new(&[("run", 28), ("Mbit/s", 10), ("of link", 7), ("vs direct", 9)]);
    for cc in ctx.opts.mesh_variants() {
        variant(ctx, &t, &cc).await?;
    }
    Ok(())
}

async fn variant(ctx: &Ctx, t: &Table, cc: &str) -> Result<()> {
    let sink = sink().await?;
    let c = node(ctx, "c", cc, &format!("peers: [ {{ name: a }}, {{ name: b }} ]\n{}", allow(&[sink.addr])))
        .await?;
    let (bc, ac) = (
        emulate(c.mesh_addr()?, HOP, ctx.opts.buffer_bdp).await?,
        emulate(c.mesh_addr()?, DIRECT, ctx.opts.buffer_bdp).await?,
    );
    let b =
        node(ctx, "b", cc, &format!("peers: [ {{ name: a }}, {{ name: c, address: \"{}\" }} ]", bc.addr()))
            .await?;
    let ab = emulate(b.mesh_addr()?, HOP, ctx.opts.buffer_bdp).await?;
    let routes =
        listeners_and_routes(&[("direct", sink.addr, "c", ""), ("relay", sink.addr, "c", "via: [b]")]);
    let body = format!(
        "peers: [ {{ name: b, address: \"{}\" }}, {{ name: c, address: \"{}\" }} ]\n{routes}",
        ab.addr(),
        ac.addr()
    );
    let a = node(ctx, "a", cc, &body).await?;
    let result = measure(ctx, t, cc, [&a, &b], &sink).await;
    for n in [a, b, c] {
        n.abort();
    }
    result
}

async fn measure(ctx: &Ctx, t: &Table, cc: &str, [a, b]: [&Node; 2], sink: &Sink) -> Result<()> {
    wait_links(&[(a, "b"), (a, "c"), (b, "c")]).await?;
    let len = ctx.opts.bulk_len(100);
    let name = cc;
    let direct = timed(tcp_upload(entry(a, "direct")?, len), len, &sink.received, ctx.opts.timeout).await?;
    let relay = timed(tcp_upload(entry(a, "relay")?, len), len, &sink.received, ctx.opts.timeout).await?;
    t.row(&[format!("mesh {name}, direct"), direct.cell(), pct(direct.mbit() / 100.0), "1.00x".into()]);
    t.row(&[
        format!("mesh {name}, via b"),
        relay.cell(),
        pct(relay.mbit() / 100.0),
        ratio(relay.mbit(), direct.mbit()),
    ]);
    Ok(())
}
