//! Every string setting of every section, set through the environment with values that look
//! like numbers, stays the text it was (a `+` kept, leading zeros kept); number settings still
//! read from the environment as numbers.

use std::collections::HashMap;
use std::path::PathBuf;

use secrecy::ExposeSecret;
use simflow_outlet::OutletSettings;
use simflow_runtime::Settings;
use simflow_writecard::settings::WritecardSettings;

fn load(variables: &[(&str, &str)]) -> Settings {
    let environment: HashMap<String, String> = variables
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Settings::load_with_environment(None, Some(environment)).expect("settings load")
}

#[test]
fn string_settings_from_the_environment_stay_strings() {
    let settings = load(&[
        ("SIMFLOW__AMQP__URI", "amqp://0601:0042@127.0.0.1:5672/%2f"),
        ("SIMFLOW__AMQP__MANAGEMENT_URL", "http://127.0.0.1:15672"),
        ("SIMFLOW__AMQP__MANAGEMENT_USER", "0601"),
        ("SIMFLOW__AMQP__MANAGEMENT_PASSWORD", "00123"),
        (
            "SIMFLOW__DATABASE__URL",
            "postgres://0601@127.0.0.1:5432/001",
        ),
        (
            "SIMFLOW__DATABASE__READ_URL",
            "postgres://0601@127.0.0.1:5461,127.0.0.1:5462/001?target_session_attrs=prefer-standby",
        ),
        ("SIMFLOW__HTTP__LISTEN", "127.0.0.1:9464"),
        ("SIMFLOW__CARDDATA__KEK_ID", "0042"),
        ("SIMFLOW__CARDDATA__KEK", "0011223344556677"),
        ("SIMFLOW__CARDDATA__RETIRED_KEKS", "007:0011"),
        ("SIMFLOW__CARDDATA__TRANSPORT_KEYS", "01:0011"),
        ("SIMFLOW__WRITECARD__SMSP", "+8613800100500"),
        ("SIMFLOW__WRITECARD__SPN", "001"),
        ("SIMFLOW__WRITECARD__CARD_FAMILY", "0601"),
        ("SIMFLOW__WRITECARD__EHPLMN", "clear"),
        ("SIMFLOW__OUTLET__CODE", "0601"),
        ("SIMFLOW__OUTLET__READER", "00 01"),
        ("SIMFLOW__OUTLET__KEY_FILE", "0600"),
        ("SIMFLOW__OUTLET__JOURNAL", "007"),
        (
            "SIMFLOW__OUTLET__BROKER_URI",
            "amqp://0601:1e5@127.0.0.1:5672/%2f",
        ),
    ]);
    assert_eq!(
        settings.amqp.uri.expose_secret(),
        "amqp://0601:0042@127.0.0.1:5672/%2f"
    );
    assert_eq!(settings.amqp.management_user, "0601");
    assert_eq!(settings.amqp.management_password.expose_secret(), "00123");
    assert_eq!(
        settings.database.url.expose_secret(),
        "postgres://0601@127.0.0.1:5432/001"
    );
    assert_eq!(
        settings
            .database
            .read_url
            .as_ref()
            .map(|url| url.expose_secret().to_owned()),
        Some(
            "postgres://0601@127.0.0.1:5461,127.0.0.1:5462/001?target_session_attrs=prefer-standby"
                .to_owned()
        )
    );
    assert_eq!(settings.carddata.kek_id, "0042");
    assert_eq!(
        settings
            .carddata
            .kek
            .as_ref()
            .map(|kek| kek.expose_secret().to_owned()),
        Some("0011223344556677".to_owned())
    );
    assert_eq!(
        settings
            .carddata
            .retired_keks
            .as_ref()
            .map(|keks| keks.expose_secret().to_owned()),
        Some("007:0011".to_owned())
    );
    let writecard: WritecardSettings = settings.section("writecard").expect("[writecard]");
    assert_eq!(writecard.smsp.as_deref(), Some("+8613800100500"));
    assert_eq!(writecard.spn, "001");
    assert_eq!(writecard.card_family, "0601");
    let outlet: OutletSettings = settings.section("outlet").expect("[outlet]");
    assert_eq!(outlet.code, "0601");
    assert_eq!(outlet.reader, "00 01");
    assert_eq!(outlet.key_file, PathBuf::from("0600"));
    assert_eq!(outlet.journal, PathBuf::from("007"));
    assert_eq!(
        outlet
            .broker_uri
            .as_ref()
            .map(|uri| uri.expose_secret().to_owned()),
        Some("amqp://0601:1e5@127.0.0.1:5672/%2f".to_owned())
    );
}

#[test]
fn an_outlet_node_takes_its_other_broker_nodes_comma_separated() {
    let settings = load(&[
        ("SIMFLOW__OUTLET__CODE", "HX01"),
        ("SIMFLOW__OUTLET__READER", "r"),
        ("SIMFLOW__OUTLET__KEY_FILE", "k"),
        ("SIMFLOW__OUTLET__JOURNAL", "j"),
        (
            "SIMFLOW__OUTLET__BROKER_URI",
            "amqp://simflow-outlet-HX01:pw@127.0.0.1:5701/%2f",
        ),
        (
            "SIMFLOW__OUTLET__BROKER_FAILOVER_URIS",
            "amqp://simflow-outlet-HX01:pw@127.0.0.1:5702/%2f,amqp://simflow-outlet-HX01:pw@127.0.0.1:5703/%2f",
        ),
    ]);
    let outlet: OutletSettings = settings.section("outlet").expect("[outlet]");
    outlet.validate().expect("valid");
    assert_eq!(outlet.broker_failover_uris.len(), 2);
    let connection = outlet.connection().expect("connection");
    assert_eq!(connection.addresses().len(), 3);
    assert!(!format!("{outlet:?}").contains("pw@"));
}

#[test]
fn an_outlet_failover_node_with_another_user_is_refused() {
    let settings = load(&[
        ("SIMFLOW__OUTLET__CODE", "HX01"),
        ("SIMFLOW__OUTLET__READER", "r"),
        ("SIMFLOW__OUTLET__KEY_FILE", "k"),
        ("SIMFLOW__OUTLET__JOURNAL", "j"),
        (
            "SIMFLOW__OUTLET__BROKER_URI",
            "amqp://simflow-outlet-HX01:pw@127.0.0.1:5701/%2f",
        ),
        (
            "SIMFLOW__OUTLET__BROKER_FAILOVER_URIS",
            "amqp://guest:guest@127.0.0.1:5702/%2f",
        ),
    ]);
    let outlet: OutletSettings = settings.section("outlet").expect("[outlet]");
    let error = outlet.validate().expect_err("another user");
    assert!(
        error.to_string().contains("broker_failover_uris entry 1"),
        "{error}"
    );
}

#[test]
fn number_settings_from_the_environment_are_still_numbers() {
    let settings = load(&[
        ("SIMFLOW__AMQP__PREFETCH", "7"),
        ("SIMFLOW__TOPOLOGY__RETRY_DELAYS_MS", "100,2000"),
        ("SIMFLOW__WORKER__BATCH_SIZE", "16"),
        ("SIMFLOW__WRITECARD__MNC_DIGITS", "3"),
    ]);
    assert_eq!(settings.amqp.prefetch, 7);
    assert_eq!(settings.topology.retry_delays_ms, vec![100, 2000]);
    assert_eq!(settings.worker.batch_size, 16);
    let writecard: WritecardSettings = settings.section("writecard").expect("[writecard]");
    assert_eq!(writecard.mnc_digits, 3);
}

#[test]
fn a_number_setting_that_is_not_a_number_is_refused_with_its_name() {
    let environment: HashMap<String, String> =
        HashMap::from([("SIMFLOW__AMQP__PREFETCH".to_owned(), "many".to_owned())]);
    let error = Settings::load_with_environment(None, Some(environment))
        .expect_err("not a number")
        .to_string();
    assert!(error.contains("configuration"), "{error}");
}
