//! The family seam: a script built for one card family never runs on a card of the other.
//!
//! The outlet node's card work (`simflow_outlet::card::write_card`) is driven directly, through
//! pcscd, with a blank of one family in the reader and a script of the other family for that
//! very card (same ICCID: a card type mapped to the wrong family at the centre).

use super::*;
use simflow_card::profile::{SysmoIsimSja2, SysmoUsimSjs1};
use simflow_schemas::writecard::{CardWriteState, WriteOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_for_one_family_never_runs_on_a_card_of_the_other() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let pairs: [(&str, &dyn CardFamily); 2] = [
        (SysmoUsimSjs1::NAME, &SysmoIsimSja2::default()),
        (SysmoIsimSja2::NAME, &SysmoUsimSjs1::default()),
    ];
    for (card_family, script_family) in pairs {
        let blank = BlankInReader::insert(card_family, &reader, |_| {});
        let script = write_script_for(script_family, &blank.p, &blank.challenge);
        let (outcome, marked) = node_writes(&reader.name, script).await;
        let Ok(WriteOutcome::Failed { card_state, reason }) = outcome else {
            panic!("a {card_family} took a script for another family: {outcome:?}");
        };
        assert_eq!(card_state, CardWriteState::Untouched);
        assert_eq!(reason.code, "CARD_FAMILY_MISMATCH");
        assert_eq!(reason.message_zh, "请更换白卡！");
        assert!(!marked, "the journal never said writing started");
        let counters = blank.sim.counters();
        assert_eq!(
            counters.ins(0x20),
            0,
            "no ADM1 try was spent on the wrong card"
        );
        assert_eq!(
            counters.ins(0xD6) + counters.ins(0xDC),
            0,
            "nothing was written"
        );
        let snapshot = blank.sim.snapshot();
        assert_eq!(snapshot.adm_tries_left, 3);
        assert_eq!(snapshot.imsi(), None);
        blank.card.remove().await;
        blocking({
            let name = reader.name.clone();
            move || Reader::open(&name).map(|reader| reader.wait_for_empty(CARD_WAIT))
        })
        .await
        .expect("reader");
    }
}
