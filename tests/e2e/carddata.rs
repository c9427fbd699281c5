//! Card data file import (号卡文件) end to end against the real PostgreSQL (and RabbitMQ for
//! the queue job): keys encrypted at rest, both column spellings, transport-key encrypted
//! columns, every row-level and file-level refusal, duplicates in the file and against the
//! database, idempotent re-import, an interrupted import that resumes, KEK rotation, the queue
//! job, a million rows, and no key value in any output.
//!
//! Every key here is random, generated per test.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use simflow_card::encoding::luhn_check_digit;
use simflow_carddata::import::{CardFile, ImportError, ImportReport, ImportRequest, NoProgress};
use simflow_carddata::transport::TransportKey;
use simflow_carddata::{Importer, KekRing, keys};
use simflow_cli::pipeline::WorkerKind;
use simflow_cli::world::{random_digits, random_hex};
use simflow_runtime::Settings;
use simflow_schemas::cardfile::{CardFileImport, CardFileImported, CardFileSource};
use simflow_tests::TestEnv;
use uuid::Uuid;

use crate::support::{count, rejection_code, send};

const CARD_TYPE: &str = "USIM128K_NORMAL";
const TRANSPORT_NAME: &str = "vendor-test";

/// One generated card with its plain-text keys.
#[derive(Debug, Clone)]
struct TestCard {
    iccid: String,
    imsi: String,
    ki: String,
    opc: String,
    adm1: String,
    pin1: String,
    puk1: String,
}

fn iccid(body: u64) -> String {
    let body = format!("{body}");
    let check = luhn_check_digit(&body).expect("digits");
    format!("{body}{check}")
}

/// `count` cards with ICCIDs from body `first_body` and IMSIs from `first_imsi`.
fn cards(first_body: u64, first_imsi: u64, count: u64) -> Vec<TestCard> {
    (0..count)
        .map(|index| TestCard {
            iccid: iccid(first_body + index),
            imsi: format!("{}", first_imsi + index),
            ki: random_hex(16),
            opc: random_hex(16),
            adm1: random_digits(8),
            pin1: random_digits(4),
            puk1: random_digits(8),
        })
        .collect()
}

/// The pySim-shell key store spelling.
fn shell_csv(cards: &[TestCard]) -> String {
    let mut text = String::from("ICCID,IMSI,KI,OPC,ADM1,PIN1,PUK1\n");
    for card in cards {
        text.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            card.iccid, card.imsi, card.ki, card.opc, card.adm1, card.pin1, card.puk1
        ));
    }
    text
}

/// The pySim-prog spelling, ADM1 as `pin_adm_hex`.
fn prog_csv(cards: &[TestCard]) -> String {
    let mut text = String::from("iccid,imsi,Ki,opc,pin_adm_hex,mcc,mnc,acc,smsp\n");
    for card in cards {
        text.push_str(&format!(
            "{},{},{},{},{},460,00,0001,+8613800100500\n",
            card.iccid,
            card.imsi,
            card.ki,
            card.opc,
            hex::encode(card.adm1.as_bytes())
        ));
    }
    text
}

/// The pySim-shell spelling with the key columns (KI, OPC, ADM1) encrypted under `transport`.
fn transport_encrypted_csv(transport: &TransportKey, cards: &[TestCard]) -> anyhow::Result<String> {
    let mut text = String::from("ICCID,IMSI,KI,OPC,ADM1\n");
    for card in cards {
        text.push_str(&format!(
            "{},{},{},{},{}\n",
            card.iccid,
            card.imsi,
            transport.encrypt_field(&hex::decode(&card.ki)?)?,
            transport.encrypt_field(&hex::decode(&card.opc)?)?,
            transport.encrypt_adm1(card.adm1.as_bytes().try_into()?)?
        ));
    }
    Ok(text)
}

/// Random keys for one test, as settings and as environment variables.
#[derive(Debug)]
struct TestKeys {
    kek: String,
    transport: String,
}

impl TestKeys {
    fn new() -> TestKeys {
        TestKeys {
            kek: random_hex(32),
            transport: random_hex(16),
        }
    }

    fn apply(&self, settings: &mut Settings) {
        settings.carddata.kek_id = "test-k1".into();
        settings.carddata.kek = Some(SecretString::from(self.kek.clone()));
        settings.carddata.transport_keys = Some(SecretString::from(format!(
            "{TRANSPORT_NAME}:{}",
            self.transport
        )));
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SIMFLOW__CARDDATA__KEK_ID".into(), "test-k1".into()),
            ("SIMFLOW__CARDDATA__KEK".into(), self.kek.clone()),
            (
                "SIMFLOW__CARDDATA__TRANSPORT_KEYS".into(),
                format!("{TRANSPORT_NAME}:{}", self.transport),
            ),
        ]
    }

    fn transport_key(&self) -> TransportKey {
        TransportKey::from_hex(TRANSPORT_NAME, &self.transport).expect("valid transport key")
    }

    /// Every secret of these cards, as the strings that must never be seen.
    fn secrets_of(cards: &[TestCard]) -> Vec<String> {
        cards
            .iter()
            .flat_map(|card| {
                [
                    card.ki.clone(),
                    card.ki.to_uppercase(),
                    card.opc.clone(),
                    card.opc.to_uppercase(),
                    card.adm1.clone(),
                    hex::encode(card.adm1.as_bytes()),
                    card.puk1.clone(),
                ]
            })
            .collect()
    }
}

struct World {
    env: TestEnv,
    keys: TestKeys,
    importer: Importer,
}

async fn world() -> anyhow::Result<World> {
    let mut env = TestEnv::new().await?;
    let keys = TestKeys::new();
    keys.apply(&mut env.settings);
    let importer = Importer::from_settings(env.pool.clone(), &env.settings.carddata)?;
    Ok(World {
        env,
        keys,
        importer,
    })
}

fn request(transport_key: Option<&str>) -> ImportRequest {
    ImportRequest {
        file_name: "vendor.csv".into(),
        card_type: CARD_TYPE.into(),
        transport_key: transport_key.map(str::to_owned),
        staff_id: "HX0001".into(),
    }
}

fn bytes(text: impl Into<Vec<u8>>) -> CardFile {
    CardFile::Bytes(Arc::from(text.into()))
}

async fn import_text(world: &World, text: &str) -> Result<ImportReport, ImportError> {
    world
        .importer
        .import(bytes(text), &request(None), &NoProgress)
        .await
}

/// The problems of a report as (line, column, code).
fn problems(report: &ImportReport) -> Vec<(u64, String, String)> {
    report
        .problems
        .iter()
        .map(|problem| {
            (
                problem.line,
                problem.column.clone().unwrap_or_default(),
                problem.code.clone(),
            )
        })
        .collect()
}

fn file_code(result: Result<ImportReport, ImportError>) -> String {
    match result {
        Err(ImportError::File(rejection)) => rejection.reason.code.to_owned(),
        other => panic!("expected a file-level refusal, got {other:?}"),
    }
}

async fn nothing_imported(env: &TestEnv) {
    assert_eq!(count(env, "SELECT count(*) FROM carddata.cards").await, 0);
    assert_eq!(count(env, "SELECT count(*) FROM carddata.imports").await, 0);
    assert_eq!(
        count(
            env,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'carddata' AND tablename LIKE 'staged_%'"
        )
        .await,
        0,
        "no staging table is left behind"
    );
}

/// Everything stored for the cards, as PostgreSQL prints it (bytea as hex).
async fn stored_text(env: &TestEnv) -> String {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT c::text FROM carddata.cards c UNION ALL SELECT i::text FROM carddata.imports i \
         UNION ALL SELECT p::text FROM carddata.import_problems p",
    )
    .fetch_all(&env.pool)
    .await
    .expect("stored rows");
    rows.join("\n")
}

fn assert_no_secret(text: &str, cards: &[TestCard], what: &str) {
    for secret in TestKeys::secrets_of(cards) {
        assert!(!text.contains(&secret), "{what} contains a key value");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_file_imports_with_keys_encrypted_at_rest() -> anyhow::Result<()> {
    let world = world().await?;
    let cards = cards(898_601_100_000_000_000, 460_001_000_000_000, 50);
    let report = import_text(&world, &shell_csv(&cards)).await?;
    assert_eq!(
        (report.total_rows, report.accepted, report.rejected),
        (50, 50, 0)
    );
    assert!(report.problems.is_empty());
    assert_eq!(
        count(&world.env, "SELECT count(*) FROM carddata.cards").await,
        50
    );

    // The raw bytes hold neither the key bytes nor their hex.
    // (Format v2: a card's secrets are one sealed record; the v1 columns stay empty.)
    let sealed: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT secrets, ki FROM carddata.cards ORDER BY iccid")
            .fetch_all(&world.env.pool)
            .await?;
    for ((secrets, v1_ki), card) in sealed.iter().zip(&cards) {
        assert!(v1_ki.is_none());
        let plain_ki = hex::decode(&card.ki)?;
        let plain_opc = hex::decode(&card.opc)?;
        assert!(!secrets.windows(16).any(|window| window == plain_ki));
        assert!(!secrets.windows(16).any(|window| window == plain_opc));
        assert!(
            !secrets
                .windows(8)
                .any(|window| window == card.adm1.as_bytes())
        );
    }
    assert_no_secret(&stored_text(&world.env).await, &cards, "the database");

    // The write-card worker's view: decrypted keys in redacting types.
    let ring = KekRing::from_settings(&world.env.settings.carddata)?;
    let card = &cards[7];
    let secrets = keys::fetch(&world.env.pool, &ring, &card.iccid)
        .await?
        .expect("the card is loaded");
    assert_eq!(hex::encode(secrets.ki.bytes()), card.ki);
    assert_eq!(hex::encode(secrets.opc.bytes()), card.opc);
    assert_eq!(secrets.adm1.bytes(), card.adm1.as_bytes());
    assert_eq!(secrets.imsi, card.imsi);
    assert_eq!(
        secrets.pin1.as_ref().map(|pin| pin.digits()),
        Some(card.pin1.as_str())
    );
    assert!(secrets.pin2.is_none());
    assert_eq!(secrets.kek_id, "test-k1");
    assert_no_secret(
        &format!("{secrets:?}"),
        &cards,
        "Debug output of CardSecrets",
    );
    assert!(keys::exists(&world.env.pool, &card.iccid).await?);
    assert!(!keys::exists(&world.env.pool, &iccid(898_601_199_999_999_999)).await?);
    assert!(
        keys::fetch(&world.env.pool, &ring, &iccid(898_601_199_999_999_999))
            .await?
            .is_none()
    );
    assert_eq!(
        keys::key_ref(&card.iccid),
        format!("carddata:{}", card.iccid)
    );

    // Moving a sealed value to another card makes it fail to open.
    sqlx::query("UPDATE carddata.card_rows SET secrets = (SELECT secrets FROM carddata.card_rows WHERE iccid = $1) WHERE iccid = $2")
        .bind(&cards[0].iccid)
        .bind(&cards[1].iccid)
        .execute(&world.env.pool)
        .await?;
    assert!(
        keys::fetch(&world.env.pool, &ring, &cards[1].iccid)
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pysim_prog_spelling_imports_too() -> anyhow::Result<()> {
    let world = world().await?;
    let cards = cards(898_601_100_000_001_000, 460_001_000_001_000, 20);
    let report = import_text(&world, &prog_csv(&cards)).await?;
    assert_eq!((report.accepted, report.rejected), (20, 0));
    let ring = KekRing::from_settings(&world.env.settings.carddata)?;
    let secrets = keys::fetch(&world.env.pool, &ring, &cards[3].iccid)
        .await?
        .expect("loaded");
    assert_eq!(secrets.adm1.bytes(), cards[3].adm1.as_bytes());
    assert_eq!(secrets.extras.mcc.as_deref(), Some("460"));
    assert_eq!(secrets.extras.smsp.as_deref(), Some("+8613800100500"));
    assert!(secrets.pin1.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_key_encrypted_columns_are_decrypted_on_import() -> anyhow::Result<()> {
    let world = world().await?;
    let cards = cards(898_601_100_000_002_000, 460_001_000_002_000, 10);
    let text = transport_encrypted_csv(&world.keys.transport_key(), &cards)?;
    // Without naming the key, the encrypted ADM1 column gives the file away.
    assert_eq!(
        file_code(import_text(&world, &text).await),
        "TRANSPORT_KEY_REQUIRED"
    );
    // A name that is not configured.
    let unknown = world
        .importer
        .import(bytes(text.clone()), &request(Some("nobody")), &NoProgress)
        .await;
    assert_eq!(file_code(unknown), "TRANSPORT_KEY_UNKNOWN");
    nothing_imported(&world.env).await;

    let report = world
        .importer
        .import(
            bytes(text.clone()),
            &request(Some("VENDOR-TEST")),
            &NoProgress,
        )
        .await?;
    assert_eq!((report.accepted, report.rejected), (10, 0));
    let ring = KekRing::from_settings(&world.env.settings.carddata)?;
    let secrets = keys::fetch(&world.env.pool, &ring, &cards[9].iccid)
        .await?
        .expect("loaded");
    assert_eq!(hex::encode(secrets.ki.bytes()), cards[9].ki);
    assert_eq!(hex::encode(secrets.opc.bytes()), cards[9].opc);
    assert_eq!(secrets.adm1.bytes(), cards[9].adm1.as_bytes());

    // A plain file imported as if encrypted is refused whole: the key does not fit.
    let plain = shell_csv(&self::cards(
        898_601_100_000_003_000,
        460_001_000_003_000,
        3,
    ));
    let wrong = world
        .importer
        .import(bytes(plain), &request(Some(TRANSPORT_NAME)), &NoProgress)
        .await;
    assert_eq!(file_code(wrong), "TRANSPORT_KEY_WRONG");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_refused_by_line_and_column_and_the_rest_imported() -> anyhow::Result<()> {
    let world = world().await?;
    let good = cards(898_601_100_000_004_000, 460_001_000_004_000, 6);
    let mut text = shell_csv(&good);
    let bad = &good[0];
    let bad_luhn = format!(
        "{}{}",
        &iccid(898_601_100_000_004_100)[..18],
        (iccid(898_601_100_000_004_100).as_bytes()[18] - b'0' + 1) % 10
    );
    text.push_str(&format!(
        "{bad_luhn},460001000004100,{},{},12345678,1234,12345678\n",
        bad.ki, bad.opc
    ));
    text.push_str(&format!(
        "{},460001000004101,{},{},12345678,1234,12345678\n",
        iccid(898_601_100_000_004_101),
        &bad.ki[..30],
        bad.opc
    ));
    text.push_str(&format!(
        "{},460001000004102,{},{},1234567x,12,1234567\n",
        iccid(898_601_100_000_004_102),
        bad.ki,
        bad.opc
    ));
    let report = import_text(&world, &text).await?;
    assert_eq!(
        (report.total_rows, report.accepted, report.rejected),
        (9, 6, 3)
    );
    assert_eq!(
        problems(&report),
        [
            (8, "ICCID".into(), "ICCID_BAD_LUHN".into()),
            (9, "KI".into(), "KEY_BAD_LENGTH".into()),
            (10, "ADM1".into(), "ADM1_INVALID".into()),
            (10, "PIN1".into(), "PIN_INVALID".into()),
            (10, "PUK1".into(), "PUK_INVALID".into()),
        ]
    );
    assert!(
        report
            .problems
            .iter()
            .all(|problem| !problem.message_zh.is_empty() && !problem.message_en.is_empty())
    );
    assert_no_secret(&serde_json::to_string(&report)?, &good, "the report");
    assert_eq!(
        count(&world.env, "SELECT count(*) FROM carddata.cards").await,
        6
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_level_failures_refuse_the_whole_file_and_import_nothing() -> anyhow::Result<()> {
    let world = world().await?;
    let good = cards(898_601_100_000_005_000, 460_001_000_005_000, 5);
    let text = shell_csv(&good);

    assert_eq!(file_code(import_text(&world, "").await), "FILE_EMPTY");
    assert_eq!(
        file_code(import_text(&world, "ICCID,IMSI,KI,OPC,ADM1\n").await),
        "FILE_NO_ROWS"
    );
    let missing = text.replace(
        "ICCID,IMSI,KI,OPC,ADM1,PIN1,PUK1",
        "ICCID,IMSI,KI,OPX,ADM1,PIN1,PUK1",
    );
    assert_eq!(
        file_code(import_text(&world, &missing).await),
        "COLUMN_UNKNOWN"
    );
    let lacking: String = text
        .lines()
        .map(|line| line.rsplitn(3, ',').nth(2).unwrap_or_default().to_owned() + "\n")
        .collect::<String>()
        .replace("ICCID,IMSI,KI,OPC,ADM1", "ICCID,IMSI,KI,ADM1,PIN1");
    assert_eq!(
        file_code(import_text(&world, &lacking).await),
        "COLUMN_MISSING"
    );
    let doubled = text.replace("PIN1,PUK1", "PIN1,pin1");
    assert_eq!(
        file_code(import_text(&world, &doubled).await),
        "COLUMN_DUPLICATE"
    );
    let headerless: String = text
        .lines()
        .skip(1)
        .map(|line| format!("{line}\n"))
        .collect();
    let refused = import_text(&world, &headerless).await;
    match &refused {
        Err(ImportError::File(rejection)) => {
            assert_eq!(rejection.reason.code, "FILE_NO_HEADER");
            assert_no_secret(&format!("{rejection} {rejection:?}"), &good, "the refusal");
        }
        other => panic!("expected FILE_NO_HEADER, got {other:?}"),
    }

    // A short last row (a cut transfer) refuses the whole file, with its line.
    let cut = format!(
        "{text}{},460001000005999,{}\n",
        iccid(898_601_100_000_005_999),
        good[0].ki
    );
    match import_text(&world, &cut).await {
        Err(ImportError::File(rejection)) => {
            assert_eq!(
                (rejection.reason.code, rejection.line),
                ("COLUMN_COUNT", Some(7))
            );
        }
        other => panic!("expected COLUMN_COUNT, got {other:?}"),
    }

    // Bytes that are not UTF-8 (a GBK-encoded name, say).
    let mut gbk = text.clone().into_bytes();
    gbk.extend_from_slice(
        format!("{},460001000005998,", iccid(898_601_100_000_005_998)).as_bytes(),
    );
    gbk.extend_from_slice(b"\xc4\xe3\xba\xc3,");
    gbk.extend_from_slice(format!("{},12345678,1234,12345678\n", good[0].opc).as_bytes());
    let not_utf8 = world
        .importer
        .import(bytes(gbk), &request(None), &NoProgress)
        .await;
    assert_eq!(file_code(not_utf8), "FILE_NOT_UTF8");

    // A 10 MB line: bounded memory, a clear refusal naming the line.
    let path = std::env::temp_dir().join(format!("simflow_long_line_{}.csv", Uuid::new_v4()));
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        file.write_all(text.as_bytes())?;
        let chunk = vec![b'7'; 1 << 20];
        for _ in 0..10 {
            file.write_all(&chunk)?;
        }
        file.write_all(b"\n")?;
        file.flush()?;
    }
    let long = world
        .importer
        .import(CardFile::Path(path.clone()), &request(None), &NoProgress)
        .await;
    let _ = std::fs::remove_file(&path);
    match long {
        Err(ImportError::File(rejection)) => {
            assert_eq!(
                (rejection.reason.code, rejection.line),
                ("FILE_LINE_TOO_LONG", Some(7))
            );
        }
        other => panic!("expected FILE_LINE_TOO_LONG, got {other:?}"),
    }

    let unreadable = world
        .importer
        .import(
            CardFile::Path(PathBuf::from("/nonexistent/vendor.csv")),
            &request(None),
            &NoProgress,
        )
        .await;
    assert_eq!(file_code(unreadable), "FILE_UNREADABLE");
    nothing_imported(&world.env).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_to_run_without_a_kek() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let importer = Importer::from_settings(env.pool.clone(), &env.settings.carddata)?;
    let text = shell_csv(&cards(898_601_100_000_006_000, 460_001_000_006_000, 2));
    let result = importer
        .import(bytes(text), &request(None), &NoProgress)
        .await;
    match result {
        Err(ImportError::Keys(error)) => {
            assert!(error.to_string().contains("SIMFLOW__CARDDATA__KEK"))
        }
        other => panic!("expected a missing-KEK error, got {other:?}"),
    }
    nothing_imported(&env).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_iccids_in_the_file_and_against_the_database_are_refused() -> anyhow::Result<()> {
    let world = world().await?;
    let first = cards(898_601_100_000_007_000, 460_001_000_007_000, 5);
    import_text(&world, &shell_csv(&first)).await?;

    let mut changed = first[1].clone();
    changed.ki = random_hex(16);
    let twins = cards(898_601_100_000_007_100, 460_001_000_007_100, 1);
    let mut twin = twins[0].clone();
    twin.imsi = "460001000007199".into();
    let mut imsi_taken = cards(898_601_100_000_007_200, 460_001_000_007_200, 1)[0].clone();
    imsi_taken.imsi = first[2].imsi.clone();
    let fresh = cards(898_601_100_000_007_300, 460_001_000_007_300, 2);
    let second = [
        first[0].clone(), // line 2: same content again: accepted, nothing changes
        changed,          // line 3: same ICCID, different keys: refused
        twins[0].clone(), // line 4: twice in the file: both refused
        twin,             // line 5
        imsi_taken,       // line 6: IMSI belongs to another card
        fresh[0].clone(), // line 7
        fresh[1].clone(), // line 8
    ];
    let report = import_text(&world, &shell_csv(&second)).await?;
    assert_eq!(
        (report.total_rows, report.accepted, report.rejected),
        (7, 3, 4)
    );
    assert_eq!(
        problems(&report),
        [
            (3, "ICCID".into(), "ICCID_CONFLICT".into()),
            (4, "ICCID".into(), "ICCID_DUPLICATE_IN_FILE".into()),
            (5, "ICCID".into(), "ICCID_DUPLICATE_IN_FILE".into()),
            (6, "IMSI".into(), "IMSI_CONFLICT".into()),
        ]
    );
    assert_eq!(
        count(&world.env, "SELECT count(*) FROM carddata.cards").await,
        7
    );
    let ring = KekRing::from_settings(&world.env.settings.carddata)?;
    let kept = keys::fetch(&world.env.pool, &ring, &first[1].iccid)
        .await?
        .expect("loaded");
    assert_eq!(
        hex::encode(kept.ki.bytes()),
        first[1].ki,
        "a conflict never overwrites"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_same_file_again_reports_the_same_and_changes_nothing() -> anyhow::Result<()>
{
    let world = world().await?;
    let mut text = shell_csv(&cards(898_601_100_000_008_000, 460_001_000_008_000, 30));
    text.push_str(&format!(
        "{},4600,{},{},12345678,1234,12345678\n",
        iccid(898_601_100_000_008_999),
        random_hex(16),
        random_hex(16)
    ));
    let first = import_text(&world, &text).await?;
    assert_eq!((first.accepted, first.rejected), (30, 1));
    let before: Vec<(String, Vec<u8>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT iccid, secrets, imported_at FROM carddata.cards ORDER BY iccid")
            .fetch_all(&world.env.pool)
            .await?;
    let second = import_text(&world, &text).await?;
    assert!(second.already_imported);
    assert_eq!(
        ImportReport {
            already_imported: false,
            ..second
        },
        first,
        "the same answer"
    );
    let after: Vec<(String, Vec<u8>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT iccid, secrets, imported_at FROM carddata.cards ORDER BY iccid")
            .fetch_all(&world.env.pool)
            .await?;
    assert_eq!(before, after, "nothing changed");
    assert_eq!(
        count(&world.env, "SELECT count(*) FROM carddata.imports").await,
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_kek_re_encrypts_every_row_and_can_run_again() -> anyhow::Result<()> {
    let world = world().await?;
    let cards = cards(898_601_100_000_009_000, 460_001_000_009_000, 120);
    import_text(&world, &shell_csv(&cards)).await?;
    let before: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT secrets FROM carddata.cards ORDER BY iccid")
            .fetch_all(&world.env.pool)
            .await?;

    // k2 becomes current, k1 is retired.
    let new_kek = random_hex(32);
    let mut settings = world.env.settings.carddata.clone();
    settings.retired_keks = Some(SecretString::from(format!("test-k1:{}", world.keys.kek)));
    settings.kek_id = "test-k2".into();
    settings.kek = Some(SecretString::from(new_kek.clone()));
    let ring = KekRing::from_settings(&settings)?;
    let report = simflow_carddata::rotate::rotate_kek(&world.env.pool, &ring, 50, &|_| {}).await?;
    assert_eq!((report.rotated, report.remaining), (120, 0));
    let after: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT secrets FROM carddata.cards ORDER BY iccid")
            .fetch_all(&world.env.pool)
            .await?;
    assert!(before.iter().zip(&after).all(|(old, new)| old != new));
    assert_eq!(
        count(
            &world.env,
            "SELECT count(*) FROM carddata.cards WHERE kek_id = 'test-k2'"
        )
        .await,
        120
    );
    let again = simflow_carddata::rotate::rotate_kek(&world.env.pool, &ring, 50, &|_| {}).await?;
    assert_eq!((again.rotated, again.remaining), (0, 0));

    // With the old KEK removed, every card still opens.
    settings.retired_keks = None;
    let only_new = KekRing::from_settings(&settings)?;
    let secrets = keys::fetch(&world.env.pool, &only_new, &cards[77].iccid)
        .await?
        .expect("loaded");
    assert_eq!(hex::encode(secrets.ki.bytes()), cards[77].ki);
    Ok(())
}

/// Rows stored before migration 0002 (format v1: each secret sealed on its own) still open,
/// and rotation rewrites them as one sealed record even under the same KEK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_v1_rows_still_open_and_rotation_rewrites_them() -> anyhow::Result<()> {
    use simflow_carddata::kek::{Kek, SealedColumn};
    let world = world().await?;
    let card = cards(898_601_100_000_009_500, 460_001_000_009_500, 1)[0].clone();
    let kek = Kek::from_hex("test-k1", &world.keys.kek)?;
    let iccid = card.iccid.as_str();
    let import_key: i64 = sqlx::query_scalar(
        "INSERT INTO carddata.imports (file_sha256, card_type, file_name, started_by, state, total_rows) \
         VALUES ('\\x00', $1, 'v1.csv', 'test', 'done', 1) RETURNING import_key",
    )
    .bind(CARD_TYPE)
    .fetch_one(&world.env.pool)
    .await?;
    sqlx::query(
        "INSERT INTO carddata.card_rows (iccid, imsi, card_type, fingerprint, kek_id, ki, opc, adm1, \
                pin1, import_key) VALUES ($1, $2, $3, '\\x00', 'test-k1', $4, $5, $6, $7, $8)",
    )
    .bind(iccid)
    .bind(&card.imsi)
    .bind(CARD_TYPE)
    .bind(kek.seal(iccid, SealedColumn::Ki, &hex::decode(&card.ki)?))
    .bind(kek.seal(iccid, SealedColumn::Opc, &hex::decode(&card.opc)?))
    .bind(kek.seal(iccid, SealedColumn::Adm1, card.adm1.as_bytes()))
    .bind(kek.seal(iccid, SealedColumn::Pin1, card.pin1.as_bytes()))
    .bind(import_key)
    .execute(&world.env.pool)
    .await?;
    let ring = KekRing::from_settings(&world.env.settings.carddata)?;
    let check = |secrets: simflow_carddata::CardSecrets| {
        assert_eq!(hex::encode(secrets.ki.bytes()), card.ki);
        assert_eq!(hex::encode(secrets.opc.bytes()), card.opc);
        assert_eq!(secrets.adm1.bytes(), card.adm1.as_bytes());
        assert_eq!(
            secrets.pin1.as_ref().map(|pin| pin.digits()),
            Some(card.pin1.as_str())
        );
        assert!(secrets.puk1.is_none());
    };
    check(
        keys::fetch(&world.env.pool, &ring, iccid)
            .await?
            .expect("loaded"),
    );

    let report = simflow_carddata::rotate::rotate_kek(&world.env.pool, &ring, 10, &|_| {}).await?;
    assert_eq!((report.rotated, report.remaining), (1, 0));
    assert_eq!(
        count(
            &world.env,
            "SELECT count(*) FROM carddata.cards WHERE secrets IS NOT NULL AND ki IS NULL"
        )
        .await,
        1
    );
    check(
        keys::fetch(&world.env.pool, &ring, iccid)
            .await?
            .expect("loaded"),
    );
    Ok(())
}

fn import_job(
    import_id: Uuid,
    source: CardFileSource,
    transport_key: Option<&str>,
) -> CardFileImport {
    CardFileImport {
        import_id,
        staff_id: "HX0001".into(),
        file_name: "vendor.csv".into(),
        card_type: CARD_TYPE.into(),
        source,
        transport_key: transport_key.map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_job_imports_a_file_and_rejects_a_broken_one() -> anyhow::Result<()> {
    let world = world().await?;
    let workers = world.env.start_workers(&[WorkerKind::CardFile]);
    let mut watch = world.env.watch().await?;

    let inline_cards = cards(898_601_100_000_010_000, 460_001_000_010_000, 25);
    let mut text = shell_csv(&inline_cards);
    text.push_str(&format!(
        "{},460001000010999,{},{},12345678,1234,12345678\n",
        iccid(898_601_100_000_010_999),
        random_hex(15),
        random_hex(16)
    ));
    let import_id = Uuid::new_v4();
    let answer = send(
        &world.env,
        &mut watch,
        &import_job(
            import_id,
            CardFileSource::Inline {
                content: text.clone(),
            },
            None,
        ),
    )
    .await?;
    assert_eq!(answer.routing_key, "cardfile.imported");
    let imported: CardFileImported = answer.decode()?;
    assert_eq!(
        (imported.import_id, imported.accepted, imported.rejected),
        (import_id, 25, 1)
    );
    assert_eq!(imported.problems[0].code, "KEY_BAD_LENGTH");
    assert_eq!(imported.problems[0].line, 27);
    assert_no_secret(&answer.body.to_string(), &inline_cards, "the event");

    // The same file again through the queue: the same counts, nothing new.
    let again = send(
        &world.env,
        &mut watch,
        &import_job(
            Uuid::new_v4(),
            CardFileSource::Inline { content: text },
            None,
        ),
    )
    .await?;
    let again: CardFileImported = again.decode()?;
    assert_eq!((again.accepted, again.rejected), (25, 1));

    // A file on disk, transport-encrypted.
    let path_cards = cards(898_601_100_000_011_000, 460_001_000_011_000, 10);
    let encrypted = transport_encrypted_csv(&world.keys.transport_key(), &path_cards)?;
    let path = std::env::temp_dir().join(format!("simflow_job_{}.csv", Uuid::new_v4()));
    std::fs::write(&path, &encrypted)?;
    let from_path = send(
        &world.env,
        &mut watch,
        &import_job(
            Uuid::new_v4(),
            CardFileSource::Path {
                path: path.to_string_lossy().into_owned(),
            },
            Some(TRANSPORT_NAME),
        ),
    )
    .await;
    let _ = std::fs::remove_file(&path);
    let from_path: CardFileImported = from_path?.decode()?;
    assert_eq!((from_path.accepted, from_path.rejected), (10, 0));

    // File-level failures are rejections with the clerk's reason.
    let empty = send(
        &world.env,
        &mut watch,
        &import_job(
            Uuid::new_v4(),
            CardFileSource::Inline {
                content: String::new(),
            },
            None,
        ),
    )
    .await?;
    assert_eq!(rejection_code(&empty), "FILE_EMPTY");
    assert!(
        !empty.body["reason"]["message_zh"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    let missing = send(
        &world.env,
        &mut watch,
        &import_job(
            Uuid::new_v4(),
            CardFileSource::Inline {
                content: "ICCID,IMSI,KI\n1,2,3\n".into(),
            },
            None,
        ),
    )
    .await?;
    assert_eq!(rejection_code(&missing), "COLUMN_MISSING");
    let unknown_key = send(
        &world.env,
        &mut watch,
        &import_job(
            Uuid::new_v4(),
            CardFileSource::Inline {
                content: encrypted.clone(),
            },
            Some("nobody"),
        ),
    )
    .await?;
    assert_eq!(rejection_code(&unknown_key), "TRANSPORT_KEY_UNKNOWN");

    assert_eq!(
        count(&world.env, "SELECT count(*) FROM carddata.cards").await,
        35
    );
    workers.stop().await?;
    Ok(())
}

/// Runs `simflow carddata …` with the test's settings and keys; returns (success, stdout, stderr).
async fn run_cli(
    world: &World,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> anyhow::Result<(bool, String, String)> {
    let output = cli_command(world, args, extra_env)?.output().await?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn cli_command(
    world: &World,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> anyhow::Result<tokio::process::Command> {
    let mut command = tokio::process::Command::new(simflow_tests::process::simflow_binary()?);
    command
        .args(args)
        .envs(simflow_tests::process::settings_env(&world.env.settings))
        .envs(world.keys.env())
        .envs(
            extra_env
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        )
        .current_dir(simflow_tests::workspace_root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    Ok(command)
}

fn temp_csv(text: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("simflow_cli_{}.csv", Uuid::new_v4()));
    std::fs::write(&path, text)?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_a_summary_and_no_key_even_at_debug_level() -> anyhow::Result<()> {
    let world = world().await?;
    let good = cards(898_601_100_000_012_000, 460_001_000_012_000, 40);
    let mut text = shell_csv(&good);
    // A refused row whose bad value is itself key material.
    text.push_str(&format!(
        "{},460001000012999,{}0,{},12345678,1234,12345678\n",
        iccid(898_601_100_000_012_999),
        good[0].ki,
        good[0].opc
    ));
    let path = temp_csv(&text)?;
    let file = path.to_string_lossy().into_owned();
    let debug = [("RUST_LOG", "debug,lapin=off")];

    let (ok, stdout, stderr) = run_cli(
        &world,
        &["carddata", "import", &file, "--card-type", CARD_TYPE],
        &debug,
    )
    .await?;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("41 rows, 40 accepted, 1 rejected"),
        "{stdout}"
    );
    assert!(stdout.contains("KEY_BAD_LENGTH"), "{stdout}");
    assert!(stdout.contains("line       42"), "{stdout}");
    assert_no_secret(&stdout, &good, "stdout");
    assert_no_secret(&stderr, &good, "stderr");

    let (ok, stdout, stderr) = run_cli(
        &world,
        &[
            "carddata",
            "import",
            &file,
            "--card-type",
            CARD_TYPE,
            "--json",
        ],
        &debug,
    )
    .await?;
    assert!(ok, "{stderr}");
    let report: ImportReport = serde_json::from_str(&stdout)?;
    assert!(report.already_imported);
    assert_eq!((report.accepted, report.rejected), (40, 1));
    assert_no_secret(&stdout, &good, "stdout");
    assert_no_secret(&stderr, &good, "stderr");

    // A file-level refusal: non-zero exit, the reason in both languages, no key.
    let headerless = temp_csv(
        &text
            .lines()
            .skip(1)
            .map(|line| format!("{line}\n"))
            .collect::<String>(),
    )?;
    let (ok, stdout, stderr) = run_cli(
        &world,
        &[
            "carddata",
            "import",
            &headerless.to_string_lossy(),
            "--card-type",
            CARD_TYPE,
        ],
        &debug,
    )
    .await?;
    let _ = std::fs::remove_file(&headerless);
    assert!(!ok);
    assert!(
        stderr.contains("FILE_NO_HEADER") && stderr.contains("号卡文件缺少表头行"),
        "{stderr}"
    );
    assert_no_secret(&stdout, &good, "stdout");
    assert_no_secret(&stderr, &good, "stderr");

    // Rotation from the command line, with its output checked too.
    let new_kek = random_hex(32);
    let retired = format!("test-k1:{}", world.keys.kek);
    let (ok, stdout, stderr) = run_cli(
        &world,
        &["carddata", "rotate-kek", "--batch-size", "7"],
        &[
            ("SIMFLOW__CARDDATA__KEK_ID", "test-k2"),
            ("SIMFLOW__CARDDATA__KEK", &new_kek),
            ("SIMFLOW__CARDDATA__RETIRED_KEKS", &retired),
            ("RUST_LOG", "debug,lapin=off"),
        ],
    )
    .await?;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("re-encrypted 40 cards under KEK test-k2; 0 still"),
        "{stdout}"
    );
    assert_no_secret(&stdout, &good, "stdout");
    assert_no_secret(&stderr, &good, "stderr");
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// A generated card data file of `rows` rows in the temp dir (the benchmark's generator,
/// random keys); the caller removes it.
async fn generated_file(name: &str, rows: u64) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("simflow_{name}_{}.csv", Uuid::new_v4()));
    let generating = path.clone();
    tokio::task::spawn_blocking(move || {
        simflow_cli::commands::bench_import::generate_file(&generating, rows)
    })
    .await??;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_where_it_stopped() -> anyhow::Result<()> {
    let world = world().await?;
    let rows = 200_000u64;
    let path = generated_file("resume", rows).await?;
    let file = path.to_string_lossy().into_owned();
    let args = [
        "carddata",
        "import",
        file.as_str(),
        "--card-type",
        CARD_TYPE,
        "--json",
    ];
    let chunk = [("SIMFLOW__CARDDATA__CHUNK_ROWS", "2000")];

    let mut first = cli_command(&world, &args, &chunk)?.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let staged: Option<i64> = sqlx::query_scalar("SELECT rows_read FROM carddata.imports")
            .fetch_optional(&world.env.pool)
            .await?;
        if staged.is_some_and(|rows| rows >= 20_000) {
            break;
        }
        if let Some(status) = first.try_wait()? {
            panic!("the import ended before it could be interrupted: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the import did not start staging"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await?;
    let checkpoint: i64 = sqlx::query_scalar("SELECT rows_read FROM carddata.imports")
        .fetch_one(&world.env.pool)
        .await?;
    assert!(
        checkpoint > 0 && checkpoint < rows as i64,
        "killed mid-file at {checkpoint}"
    );
    assert_eq!(
        count(&world.env, "SELECT count(*) FROM carddata.cards").await,
        0,
        "readers see nothing of a half-staged file"
    );

    let (ok, stdout, stderr) = run_cli(&world, &args, &chunk).await?;
    let _ = std::fs::remove_file(&path);
    assert!(ok, "{stderr}");
    let report: ImportReport = serde_json::from_str(&stdout)?;
    assert_eq!(
        report.resumed_from_row, checkpoint as u64,
        "resumed at the checkpoint"
    );
    assert_eq!((report.accepted, report.rejected), (rows, 0));
    assert_eq!(
        count(&world.env, "SELECT count(*) FROM carddata.cards").await,
        rows as i64
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_file_imports_in_one_piece() -> anyhow::Result<()> {
    let world = world().await?;
    let rows = 1_000_000u64;
    let path = generated_file("million", rows).await?;
    let started = Instant::now();
    let report = world
        .importer
        .import(CardFile::Path(path.clone()), &request(None), &NoProgress)
        .await;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&path);
    let report = report?;
    eprintln!("imported {rows} rows in {:.1}s", elapsed.as_secs_f64());
    assert_eq!((report.accepted, report.rejected), (rows, 0));
    assert_eq!(
        count(&world.env, "SELECT count(*) FROM carddata.cards").await,
        rows as i64
    );
    assert_eq!(
        count(
            &world.env,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'carddata' AND tablename LIKE 'staged_%'"
        )
        .await,
        0
    );
    Ok(())
}
