//! `simflow bench card`: what one personalisation costs at the card, for each card family —
//! APDUs on the wire and host-side milliseconds per card — through the real pcscd and a vpcd
//! virtual reader with the software SIM in it, and for the SJA2 also without the soft SIM
//! re-arming TCP_QUICKACK, in one run.
//!
//! Host-side time runs from the first identification APDU to the card's answer to the
//! authentication challenge (connecting and waiting for the card are not part of it).
//! The bench holds the first virtual reader with the test harness's lease lock, so test runs
//! sharing the machine's pcscd wait for it rather than insert cards beside its own.
//! Only what this run measures is printed as a measurement. Peer figures it cannot measure here
//! (pySim is not installable on these machines) are printed as cited, with their source.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use simflow_card::encoding::{Adm1, luhn_check_digit};
use simflow_card::profile::{
    self, CardFamily, Personalisation, StepKind, SysmoIsimSja2, SysmoUsimSjs1,
};
use simflow_softsim::{CardImage, SoftSim};

use super::vreaders;

/// Arguments of `bench card`.
#[derive(Debug, Args)]
pub struct CardBenchArgs {
    /// Cards personalised per family and measurement.
    #[arg(long, default_value_t = 20)]
    pub cards: usize,
}

/// Figures of other tools this bench does not measure: what, how much, where it comes from.
const CITED: [(&str, &str, &str); 2] = [
    (
        "pySim for a sysmoISIM-SJA2 (soft SIM)",
        "pySim-shell start-up 45 APDUs + the same nine-file write about 111 more; \
         pySim-prog stopped after 34 (missing EF.PLMNsel)",
        "counted by hand on the soft SIM, simflow issue 10",
    ),
    (
        "pySim-prog for a sysmoUSIM-SJS1",
        "85 APDUs (1 VERIFY, 67 SELECT, 5 READ BINARY, 10 UPDATE BINARY, 2 UPDATE RECORD)",
        "the team's card notes (card-notes.md)",
    ),
];

struct Measured {
    millis: Vec<f64>,
    identification_apdus: u64,
    script_apdus: u64,
    /// Script steps by kind (the same for every card).
    kinds: Vec<(StepKind, usize)>,
    steps: usize,
}

fn test_iccid(index: usize) -> anyhow::Result<String> {
    let body: u64 = rand::random::<u64>() % 100_000_000;
    let digits = format!("8988211{index:02}{body:08}");
    let check = luhn_check_digit(&digits)?;
    Ok(format!("{digits}{check}"))
}

/// A blank card with freshly generated keys and ADM1 (never real ones), and its write script.
struct GeneratedCard {
    image: CardImage,
    ki: [u8; 16],
    opc: [u8; 16],
    challenge: profile::Challenge,
    script: profile::Script,
}

fn generated_card(family: &dyn CardFamily, index: usize) -> anyhow::Result<GeneratedCard> {
    let iccid = test_iccid(index)?;
    let adm1 = format!("{:08}", rand::random::<u32>() % 100_000_000);
    let ki: [u8; 16] = rand::random();
    let opc: [u8; 16] = rand::random();
    let challenge = profile::make_challenge(
        &ki,
        &opc,
        &rand::random(),
        &[0, 0, 0, 0, 0, 0x21],
        &[0x80, 0],
    );
    let personalisation = Personalisation {
        iccid: iccid.clone(),
        imsi: format!("00101{:010}", rand::random::<u64>() % 10_000_000_000),
        msisdn: "+8613012340000".into(),
        ki,
        opc,
        adm1: Adm1::parse(&adm1)?,
        spn: Some("simflow".into()),
        mcc_mnc: Some(("001".into(), "01".into())),
        smsp: Some("+8613800100500".into()),
    };
    let script = family.build_write_script(&personalisation, &challenge)?;
    Ok(GeneratedCard {
        image: CardImage::blank_of(family.name(), &iccid, &adm1),
        ki,
        opc,
        challenge,
        script,
    })
}

async fn personalise(
    reader: &vreaders::VirtualReader,
    family: &dyn CardFamily,
    cards: usize,
    quickack: bool,
) -> anyhow::Result<Measured> {
    let mut measured = Measured {
        millis: Vec::with_capacity(cards),
        identification_apdus: 0,
        script_apdus: 0,
        kinds: Vec::new(),
        steps: 0,
    };
    for index in 0..cards {
        let card = generated_card(family, index)?;
        measured.kinds = card.script.count_by_kind();
        measured.steps = card.script.steps.len();
        let mut sim = SoftSim::new(card.image)?;
        if !quickack {
            sim = sim.without_quickack();
        }
        let inserted = vreaders::insert(&sim, reader).await?;
        let name = reader.name.clone();
        let script = card.script;
        let (elapsed, identification, total, answer) = tokio::task::spawn_blocking(move || {
            let mut reader = simflow_reader::Reader::open(&name)?;
            reader.wait_for_card(Duration::from_secs(5))?;
            reader.connect()?;
            let started = Instant::now();
            reader.identify_blank()?;
            let identification = reader.apdu_count();
            let mut answer = Vec::new();
            let auth = script.authenticate_step().map(|step| step.index);
            reader.run_steps(&script.steps, |index, response| {
                if Some(index) == auth {
                    answer = response.data.clone();
                }
            })?;
            Ok::<_, simflow_reader::ReaderError>((
                started.elapsed(),
                identification,
                reader.apdu_count(),
                answer,
            ))
        })
        .await?
        .map_err(|error| anyhow::anyhow!("personalising card {index}: {error}"))?;
        profile::check_auth_answer(&card.ki, &card.opc, &card.challenge, &answer)
            .context("the personalised card failed the authentication check")?;
        measured.millis.push(elapsed.as_secs_f64() * 1000.0);
        measured.identification_apdus = identification;
        measured.script_apdus = total - identification;
        inserted.remove().await;
        vreaders::wait_empty(reader).await?;
    }
    Ok(measured)
}

fn summary(millis: &[f64]) -> (f64, f64, f64) {
    let mut sorted = millis.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / sorted.len().max(1) as f64;
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let max = sorted.last().copied().unwrap_or_default();
    (mean, median, max)
}

fn print_family(name: &str, measured: &Measured) {
    let kinds: Vec<String> = measured
        .kinds
        .iter()
        .copied()
        .map(|(kind, count)| format!("{} {count}", step_kind(kind)))
        .collect();
    let total = measured.identification_apdus + measured.script_apdus;
    println!("  {name}:");
    println!(
        "    APDUs per full personalisation (write, read back, authenticate): {} on the wire ({} script steps: {}; the rest GET RESPONSE)",
        measured.script_apdus,
        measured.steps,
        kinds.join(", ")
    );
    println!(
        "    + {} APDUs of identification before it (ICCID and blank check) = {total} per card",
        measured.identification_apdus
    );
    let (mean, median, max) = summary(&measured.millis);
    println!(
        "    host-side time per card, TCP_QUICKACK re-armed: mean {mean:.1} ms, median {median:.1} ms, max {max:.1} ms ({:.2} ms per APDU; {} cards)",
        mean / total.max(1) as f64,
        measured.millis.len()
    );
}

/// Runs the benchmark.
pub async fn run(args: CardBenchArgs) -> anyhow::Result<()> {
    let readers = vreaders::virtual_readers()?;
    let reader = readers.first().context("no virtual reader")?.clone();
    anyhow::ensure!(args.cards > 0, "--cards must be at least 1");
    let locked = reader.clone();
    let _lease = tokio::task::spawn_blocking(move || vreaders::lock(&locked)).await??;
    let reader = &reader;
    println!(
        "bench card: {} cards per family through pcscd + vpcd ({:?}), soft SIM",
        args.cards, reader.name
    );
    let sja2 = SysmoIsimSja2::default();
    let sjs1 = SysmoUsimSjs1::default();
    let families: [&dyn CardFamily; 2] = [&sja2, &sjs1];
    let mut quick_sja2 = None;
    for family in families {
        let measured = personalise(reader, family, args.cards, true).await?;
        print_family(family.name(), &measured);
        if family.name() == SysmoIsimSja2::NAME {
            quick_sja2 = Some(summary(&measured.millis).0);
        }
    }
    let without = personalise(reader, &sja2, args.cards.min(5), false).await?;
    let (mean_without, median_without, _) = summary(&without.millis);
    let speedup = quick_sja2
        .map(|mean| format!(" ({:.0}x slower)", mean_without / mean.max(f64::EPSILON)))
        .unwrap_or_default();
    println!(
        "  {} without TCP_QUICKACK ({} cards): mean {mean_without:.1} ms, median {median_without:.1} ms{speedup}",
        SysmoIsimSja2::NAME,
        without.millis.len(),
    );
    println!("  not measured here (pySim is not installable on this machine), as cited:");
    for (what, figure, source) in CITED {
        println!("    {what}: {figure} — source: {source}");
    }
    Ok(())
}

fn step_kind(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Select => "select",
        StepKind::Verify => "verify",
        StepKind::Update => "update",
        StepKind::ReadBack => "read-back",
        StepKind::Authenticate => "authenticate",
    }
}
