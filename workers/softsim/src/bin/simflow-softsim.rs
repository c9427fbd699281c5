//! `simflow-softsim`: insert a software SIM described by a JSON card image into a vpcd reader.
//!
//! For demos and manual tests: run pcscd with the vpcd driver, then
//! `simflow-softsim --image card.json --vpcd 127.0.0.1:35963`, and any PC/SC tool sees the card
//! until this process is stopped (Ctrl-C pulls the card).

use anyhow::Context;
use clap::Parser;
use simflow_softsim::{CardImage, DEFAULT_VPCD_ADDR, Faults, SoftSim};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(version, about = "Insert a software SIM into a pcscd vpcd reader")]
struct Args {
    /// JSON card image (iccid, adm1, optional family/factory/imsi/ki/opc/atr).
    #[arg(long)]
    image: Option<PathBuf>,
    /// A blank card with this ICCID (instead of --image).
    #[arg(long, conflicts_with = "image")]
    blank_iccid: Option<String>,
    /// ADM1 of the blank card given with --blank-iccid (digits, or 16 hex characters).
    #[arg(long, requires = "blank_iccid")]
    blank_adm1: Option<String>,
    /// The family of the blank card given with --blank-iccid.
    #[arg(long, requires = "blank_iccid", default_value = "sysmoISIM-SJA2",
          value_parser = ["sysmoISIM-SJA2", "sysmoUSIM-SJS1"])]
    blank_family: String,
    /// The vpcd port of the reader to insert into.
    #[arg(long, default_value = DEFAULT_VPCD_ADDR)]
    vpcd: SocketAddr,
    /// Do not re-arm TCP_QUICKACK after each read (to measure the delayed-ACK penalty).
    #[arg(long)]
    no_quickack: bool,
    /// Pull the card after answering this many APDUs.
    #[arg(long)]
    pull_after: Option<u64>,
    /// Answer with an over-long ATR, which pcscd reports as a mute card.
    #[arg(long)]
    mute: bool,
    /// Milliseconds to wait before answering each UPDATE.
    #[arg(long)]
    update_delay_ms: Option<u64>,
    /// Give the card an ADM1 that differs from the image's.
    #[arg(long)]
    wrong_adm: bool,
    /// Answer the APDU with this number (from 1) with one byte: a malformed answer, once.
    #[arg(long)]
    garble_apdu: Option<u64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let image = match (&args.image, &args.blank_iccid) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<CardImage>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        (None, Some(iccid)) => {
            let adm1 = args
                .blank_adm1
                .as_deref()
                .context("--blank-iccid needs --blank-adm1")?;
            CardImage::blank_of(&args.blank_family, iccid, adm1)
        }
        (None, None) => anyhow::bail!("give --image FILE or --blank-iccid ICCID"),
    };
    let faults = Faults {
        pull_after_apdus: args.pull_after,
        reinsert_after: None,
        wrong_adm: args.wrong_adm,
        update_delay: args.update_delay_ms.map(Duration::from_millis),
        mute: args.mute,
        garble_apdu: args.garble_apdu,
    };
    let mut sim = SoftSim::with_faults(image.clone(), faults).context("building the card")?;
    if args.no_quickack {
        sim = sim.without_quickack();
    }
    let mut card = sim.insert(args.vpcd);
    eprintln!("inserting card {} into vpcd {} …", image.iccid, args.vpcd);
    tokio::select! {
        _ = card.connected() => eprintln!("card inserted; Ctrl-C pulls it"),
        _ = tokio::signal::ctrl_c() => { card.remove().await; return Ok(()); }
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    card.remove().await;
    let counters = sim.counters();
    eprintln!("card pulled after {} APDUs", counters.total);
    Ok(())
}
