//! Writer-level failures: no card, no reader, no PC/SC service.

use super::*;
use simflow_reader::ClerkMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_card_in_the_reader_times_out_with_cannot_connect() {
    let lease = lease(1).await;
    let reader = lease.reader().clone();
    let started = std::time::Instant::now();
    let error =
        blocking(move || Reader::open(&reader.name)?.wait_for_card(Duration::from_millis(600)))
            .await
            .expect_err("nothing is inserted");
    assert_eq!(error.code(), "NO_CARD");
    assert_eq!(error.clerk_message(), ClerkMessage::ReinsertCard);
    assert_eq!(
        error.clerk_message().zh(),
        "连接写卡器失败，请尝试重新插入白卡！"
    );
    assert_eq!(
        error.clerk_message().en(),
        "Cannot connect to the card writer; re-insert the blank card."
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_reader_is_reported_as_not_connected() {
    simflow_tests::pcsc::virtual_readers().expect("pcscd runs");
    let error = blocking(|| Reader::open("No Such Writer 00 00").map(|_| ()))
        .await
        .expect_err("no such reader");
    assert_eq!(error.code(), "READER_NOT_CONNECTED");
    assert_eq!(error.clerk_message(), ClerkMessage::ReinsertCard);
}

/// Marker the child prints before the error code.
const CHILD_MARKER: &str = "SIMFLOW_READER_ERROR_CODE=";

#[test]
fn a_missing_pcsc_service_maps_to_driver_not_installed() {
    simflow_tests::pcsc::virtual_readers().expect("pcscd runs");
    // pcsc-lite clients find pcscd through PCSCLITE_CSOCK_NAME; pointing one process at a socket
    // that does not exist is a machine without the service. The environment is process-wide, so
    // the test runs its probe in a child: this test binary, running only the helper below.
    let exe = std::env::current_exe().expect("test binary path");
    let output = std::process::Command::new(exe)
        .args([
            "--exact",
            "card::errors::child_lists_readers",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PCSCLITE_CSOCK_NAME", "/nonexistent/simflow/pcscd.comm")
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The test harness prints the marker after "test <name> ... " on the same line.
    let at = stdout
        .find(CHILD_MARKER)
        .unwrap_or_else(|| panic!("child printed no code: {stdout}"));
    let line = stdout[at + CHILD_MARKER.len()..]
        .lines()
        .next()
        .unwrap_or_default();
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(
        fields,
        [
            "READER_DRIVER_MISSING",
            "写卡器驱动未安装。",
            "Card writer driver not installed."
        ]
    );
}

/// Run in a child process by `a_missing_pcsc_service_maps_to_driver_not_installed`.
#[test]
#[ignore = "helper run in a child process with its own PCSCLITE_CSOCK_NAME"]
fn child_lists_readers() {
    match simflow_reader::list_readers() {
        Ok(readers) => println!("{CHILD_MARKER}OK|{}", readers.len()),
        Err(error) => {
            let message = error.clerk_message();
            println!(
                "{CHILD_MARKER}{}|{}|{}",
                error.code(),
                message.zh(),
                message.en()
            );
        }
    }
}
