//! The outlet lifecycle through everything real: suspend and resume refuse and restore work,
//! revocation takes the node's broker access and queue away and ends every pending script with
//! `SCRIPT_EXPIRED` (a write that finished before keeps its result), the node's heartbeat sets
//! "last seen", and every step leaves an audit row.

use std::time::Duration;

use simflow_runtime::outlet::{OutletConnection, outlet_user};
use simflow_schemas::JobSet;
use simflow_softsim::Faults;
use simflow_tests::writing::{FIRST_MSISDN, ScratchDir, WriteWorld};
use simflow_writecard::outlets::{self, AuditAction, OutletState, Step};
use uuid::Uuid;

use crate::card::lease;
use crate::outlet::{
    capture_script, deliver_to_hx01, insert, publish_write, request, sim, write_outcome,
};
use crate::support::{ANSWER, rejection_code, send};

/// What a test step says about itself in the audit.
fn by_test(reason: &str) -> Step<'_> {
    Step {
        by: "ops-test",
        reason,
    }
}

async fn audit_actions(world: &WriteWorld, code: &str) -> anyhow::Result<Vec<AuditAction>> {
    let mut connection = world.env.pool.acquire().await?;
    let mut records = outlets::audit_trail(&mut connection, Some(code), 100).await?;
    records.reverse();
    Ok(records.into_iter().map(|record| record.action).collect())
}

async fn script_states(world: &WriteWorld, order_id: Uuid) -> anyhow::Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT state FROM writecard.scripts WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(&world.env.pool)
            .await?,
    )
}

/// A suspended outlet's write requests and reads are refused with OUTLET_SUSPENDED in both
/// languages and nothing is reserved; resumed, the same order's request routes a script to its
/// queue. Both steps are audited with who and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_outlet_is_refused_new_work_until_it_is_resumed() -> anyhow::Result<()> {
    let mut world = WriteWorld::new(1, 1, &["HX01"], |_| {}).await?;
    let suspended = outlets::suspend(&world.env.pool, "HX01", &by_test("shop refit")).await?;
    assert_eq!(suspended.state(), OutletState::Suspended);

    let order_id = Uuid::new_v4();
    let job = request(order_id, "HX01", &world.cards[0], FIRST_MSISDN);
    let refused = send(&world.env, &mut world.watch, &job).await?;
    assert_eq!(rejection_code(&refused), "OUTLET_SUSPENDED");
    assert_eq!(
        refused.body["reason"]["message_zh"],
        "写卡网点已暂停服务，请联系渠道经理"
    );
    assert_eq!(
        refused.body["reason"]["message_en"],
        "The outlet is suspended; contact the channel manager"
    );
    let read = send(
        &world.env,
        &mut world.watch,
        &simflow_schemas::card::CardReadRequest {
            request_id: Uuid::new_v4(),
            outlet_code: "HX01".into(),
            staff_id: "C0601".into(),
        },
    )
    .await?;
    assert_eq!(rejection_code(&read), "OUTLET_SUSPENDED");
    let reserved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM writecard.msisdns WHERE state <> 'free'")
            .fetch_one(&world.env.pool)
            .await?;
    assert_eq!(reserved, 0, "a refused request reserves no number");
    assert_eq!(world.env.queue_depth("simflow.outlet.HX01").await?, 0);

    let resumed = outlets::resume(&world.env.pool, "HX01", &by_test("refit done")).await?;
    assert_eq!(resumed.state(), OutletState::Active);
    let mut capture = world.capture_outlet_work("HX01")?;
    publish_write(&world, &job).await?;
    let work = capture.next(ANSWER).await?;
    assert_eq!(work.job.message_type(), "writecard.script.v1");
    capture.stop().await?;

    assert_eq!(
        audit_actions(&world, "HX01").await?,
        [
            AuditAction::Provision,
            AuditAction::Suspend,
            AuditAction::Resume
        ]
    );
    let mut connection = world.env.pool.acquire().await?;
    let latest = outlets::audit_trail(&mut connection, Some("HX01"), 1).await?;
    assert_eq!(latest[0].actor, "ops-test");
    assert_eq!(latest[0].reason, "refit done");
    drop(connection);
    world.stop().await
}

/// Revocation while the node has one card written, one script in hand (waiting for a card)
/// and one queued: the node is cut off and cannot reconnect, its user and queue are gone, both
/// pending scripts end with SCRIPT_EXPIRED (event and database, each once), the written card
/// keeps its result, new requests are refused, and the revocation is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_an_outlet_cuts_off_its_node_and_expires_every_pending_script()
-> anyhow::Result<()> {
    let mut world = WriteWorld::new(3, 3, &["HX01"], |_| {}).await?;
    let readers = lease(1).await;
    let reader = readers.reader().clone();
    let dir = ScratchDir::new("revoke")?;
    let mut settings = world.node_settings("HX01", &reader.name, &dir.0)?;
    // Long enough that the node still waits for a card when the revocation comes.
    settings.card_wait_seconds = 15;
    let node = world.start_node(settings);

    // A write that finishes before the revocation.
    let written_order = Uuid::new_v4();
    let card = sim(&world.cards[0], Faults::default());
    let inserted = insert(&card, &reader).await;
    publish_write(
        &world,
        &request(written_order, "HX01", &world.cards[0], FIRST_MSISDN),
    )
    .await?;
    let written = write_outcome(&mut world.watch, written_order).await?;
    assert_eq!(written.routing_key, "card.written", "{}", written.body);
    inserted.remove().await;

    // One script the node takes and waits with for a card, one behind it in the queue.
    let pending = [Uuid::new_v4(), Uuid::new_v4()];
    for (index, order_id) in pending.iter().enumerate() {
        publish_write(
            &world,
            &request(
                *order_id,
                "HX01",
                &world.cards[index + 1],
                FIRST_MSISDN + 1 + index as u64,
            ),
        )
        .await?;
    }
    world
        .env
        .eventually(
            "the node holding one script and one queued",
            ANSWER,
            || async {
                let scripts: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM writecard.scripts WHERE state = 'sent'",
                )
                .fetch_one(&world.env.pool)
                .await?;
                let queue = world
                    .env
                    .management
                    .queue(&world.env.vhost, "simflow.outlet.HX01")
                    .await?;
                Ok(scripts == 2 && queue.messages == 2)
            },
        )
        .await?;

    let revoked = {
        let client =
            simflow_cli::world::central_client(&world.env.settings, "simflow-test-revoke").await?;
        let revoked = outlets::revoke(
            &world.env.pool,
            &client,
            &world.env.management,
            &world.env.vhost,
            "HX01",
            &by_test("contract ended"),
        )
        .await;
        client.close().await;
        revoked?
    };
    assert_eq!(revoked.expired_scripts.len(), 2);

    // The clerk and the centre hear SCRIPT_EXPIRED for each pending order, once.
    for order_id in pending {
        let expired = write_outcome(&mut world.watch, order_id).await?;
        assert_eq!(expired.routing_key, "card.write_failed", "{}", expired.body);
        assert_eq!(expired.body["reason"]["code"], "SCRIPT_EXPIRED");
        assert_eq!(
            expired.body["reason"]["message_zh"],
            "写卡超时，请重新读卡写卡"
        );
        assert_eq!(expired.body["card_state"], "untouched");
        assert_eq!(script_states(&world, order_id).await?, ["expired"]);
    }
    let later = world.watch.drain(Duration::from_secs(2)).await;
    assert!(
        later
            .iter()
            .all(|event| !event.routing_key.starts_with("card.")),
        "no second outcome: {:?}",
        later
            .iter()
            .map(|event| &event.routing_key)
            .collect::<Vec<_>>()
    );
    // The write that finished before keeps its result.
    assert_eq!(script_states(&world, written_order).await?, ["written"]);

    // The node is cut off: it ends with the broker's refusal and cannot come back.
    let ended = node.ended(Duration::from_secs(40)).await?;
    let error = ended.expect_err("the broker refuses the revoked node");
    assert!(format!("{error:#}").contains("refused"), "{error:#}");
    let connection = OutletConnection {
        uri: world.outlet_uri("HX01")?,
        failover_uris: Vec::new(),
        outlet_code: "HX01".into(),
        user: outlet_user(&world.env.vhost, "HX01"),
        tls: None,
    };
    assert!(
        simflow_runtime::outlet::check_access(&connection)
            .await
            .is_err(),
        "the outlet's credentials no longer work"
    );
    assert!(
        world
            .env
            .management
            .queue(&world.env.vhost, "simflow.outlet.HX01")
            .await
            .is_err(),
        "the outlet's queue is gone"
    );

    // Nothing new is routed to it, and provisioning it again is refused.
    let refused = send(
        &world.env,
        &mut world.watch,
        &request(Uuid::new_v4(), "HX01", &world.cards[1], FIRST_MSISDN + 5),
    )
    .await?;
    assert_eq!(rejection_code(&refused), "OUTLET_UNKNOWN");
    assert!(
        outlets::suspend(&world.env.pool, "HX01", &by_test("too late"))
            .await
            .is_err()
    );
    let actions = audit_actions(&world, "HX01").await?;
    assert_eq!(actions, [AuditAction::Provision, AuditAction::Revoke]);
    let mut db = world.env.pool.acquire().await?;
    let revoke = &outlets::audit_trail(&mut db, Some("HX01"), 1).await?[0];
    assert_eq!(revoke.reason, "contract ended");
    assert_eq!(revoke.detail.0["scripts_expired"], 2);
    drop(db);
    world.stop().await
}

/// A running node's heartbeat sets the outlet's "last seen" (the centre's clock) and version,
/// and the outlet counts as online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_heartbeat_updates_last_seen_and_the_outlet_shows_online() -> anyhow::Result<()> {
    let world = WriteWorld::new(1, 1, &["HX01"], |_| {}).await?;
    let before = {
        let mut db = world.env.pool.acquire().await?;
        outlets::get(&mut db, "HX01").await?.expect("provisioned")
    };
    assert_eq!(before.last_seen, None);
    assert!(!before.online(chrono::Utc::now(), outlets::OFFLINE_AFTER));
    let dir = ScratchDir::new("heartbeat")?;
    // No card work here: the reader need not exist.
    let mut settings = world.node_settings("HX01", "no such reader", &dir.0)?;
    settings.heartbeat_seconds = 1;
    let started = chrono::Utc::now();
    let node = world.start_node(settings);
    // Two different "last seen" values: the node beats again and again.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + ANSWER;
    while seen.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no two heartbeats within {ANSWER:?}: {seen:?}"
        );
        let mut db = world.env.pool.acquire().await?;
        let outlet = outlets::get(&mut db, "HX01").await?.expect("provisioned");
        if let Some(last) = outlet.last_seen
            && !seen.contains(&last)
        {
            seen.push(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut db = world.env.pool.acquire().await?;
    let outlet = outlets::get(&mut db, "HX01").await?.expect("provisioned");
    drop(db);
    let last_seen = outlet.last_seen.expect("seen");
    assert!(
        last_seen >= started,
        "{last_seen} is after the node started"
    );
    assert!(seen[1] > seen[0], "last seen moves forward");
    assert_eq!(
        outlet.node_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(outlet.online(chrono::Utc::now(), outlets::OFFLINE_AFTER));
    assert!(
        !outlet.online(
            last_seen + chrono::Duration::seconds(91),
            outlets::OFFLINE_AFTER
        ),
        "offline after 90 s without a heartbeat"
    );
    node.stop().await?;
    world.stop().await
}

/// The node rotates its key while scripts sealed to the old one are out: the centre takes the
/// new public key from the outlet's own broker user (audited) and seals to it from then on; a
/// script sealed before the rotation still writes its card within the grace, and after the
/// grace the node has deleted the old secret key and answers the other one SCRIPT_KEY_RETIRED,
/// its card untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_script_sealed_before_a_key_rotation_opens_within_the_grace_and_not_after()
-> anyhow::Result<()> {
    let mut world = WriteWorld::new(2, 2, &["HX01"], |_| {}).await?;
    let readers = lease(1).await;
    let reader = readers.reader().clone();
    let dir = ScratchDir::new("rotate")?;
    let mut settings = world.node_settings("HX01", &reader.name, &dir.0)?;
    settings.key_grace_seconds = 8;
    let old_fingerprint = simflow_outlet::load_key_file(&settings.key_file)?
        .public_key()
        .fingerprint();
    let orders = [Uuid::new_v4(), Uuid::new_v4()];
    let mut sealed_before = Vec::new();
    for (index, order_id) in orders.iter().enumerate() {
        let job = request(
            *order_id,
            "HX01",
            &world.cards[index],
            FIRST_MSISDN + index as u64,
        );
        let (message_id, envelope) = capture_script(&world, "HX01", &job).await?;
        assert_eq!(envelope.sealed_for, old_fingerprint);
        sealed_before.push((message_id, envelope));
    }
    let node = world.start_node(settings.clone());

    let rotation = simflow_outlet::rotate_key(&settings).await?;
    let new_fingerprint = rotation.next.public_key().fingerprint();
    assert_ne!(new_fingerprint, old_fingerprint);
    world
        .env
        .eventually("the centre sealing to the new key", ANSWER, || async {
            let mut db = world.env.pool.acquire().await?;
            let outlet = outlets::get(&mut db, "HX01").await?.expect("provisioned");
            Ok(outlet.key_fingerprint == new_fingerprint)
        })
        .await?;

    // Within the grace: the old script opens and writes its card.
    let first = sim(&world.cards[0], Faults::default());
    let inserted = insert(&first, &reader).await;
    deliver_to_hx01(&world, &sealed_before[0].1, &sealed_before[0].0).await?;
    let written = write_outcome(&mut world.watch, orders[0]).await?;
    assert_eq!(written.routing_key, "card.written", "{}", written.body);
    inserted.remove().await;

    // After the grace: the old secret key is gone and its script is refused with a reason.
    let left = (rotation.previous_key_retires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(200)).await;
    let second = sim(&world.cards[1], Faults::default());
    let _inserted = insert(&second, &reader).await;
    deliver_to_hx01(&world, &sealed_before[1].1, &sealed_before[1].0).await?;
    let refused = write_outcome(&mut world.watch, orders[1]).await?;
    assert_eq!(refused.routing_key, "card.write_failed", "{}", refused.body);
    assert_eq!(refused.body["reason"]["code"], "SCRIPT_KEY_RETIRED");
    assert_eq!(
        refused.body["reason"]["message_zh"],
        "写卡脚本已失效（写卡器密钥已更换），请重新写卡"
    );
    assert_eq!(refused.body["card_state"], "untouched");
    assert_eq!(second.counters().total, 0, "the card was never touched");
    assert!(
        !simflow_outlet::keys::previous_file(&settings.key_file).exists(),
        "the node deleted the old secret key"
    );

    let mut db = world.env.pool.acquire().await?;
    let rotate = &outlets::audit_trail(&mut db, Some("HX01"), 1).await?[0];
    assert_eq!(rotate.action, AuditAction::Rotate);
    assert_eq!(rotate.actor, outlet_user(&world.env.vhost, "HX01"));
    assert_eq!(
        rotate.detail.0["previous_fingerprint"],
        old_fingerprint.as_str()
    );
    assert_eq!(rotate.detail.0["key_fingerprint"], new_fingerprint.as_str());
    drop(db);
    node.stop().await?;
    world.stop().await
}
