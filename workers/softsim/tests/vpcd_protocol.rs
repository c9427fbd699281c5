//! The soft SIM against a stand-in for pcscd's vpcd driver on loopback: the framing, the
//! control bytes, retrying the connection, and card state across removal and re-insertion.
//! (The real pcscd is exercised by the end-to-end tests in `tests/e2e/card`.)

use simflow_card::apdu::Command;
use simflow_card::encoding::Adm1;
use simflow_card::profile::SJA2_ATR;
use simflow_softsim::{CardImage, CardState, SoftSim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ICCID: &str = "8988211000000530082";
const ADM: &str = "55538407";

async fn send(stream: &mut TcpStream, body: &[u8]) {
    let mut frame = (body.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).await.expect("write frame");
}

async fn receive(stream: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.expect("frame length");
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).await.expect("frame body");
    body
}

async fn exchange(stream: &mut TcpStream, apdu: &[u8]) -> Vec<u8> {
    send(stream, apdu).await;
    receive(stream).await
}

#[tokio::test]
async fn the_card_speaks_vpcd_framing_and_keeps_its_files_across_reinsertion() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sim = SoftSim::new(CardImage::blank(ICCID, ADM)).expect("image");
    let mut card = sim.insert(listener.local_addr().expect("address"));
    let (mut vpcd, _) = listener.accept().await.expect("the card connects");
    card.connected().await;

    assert_eq!(hex::encode(exchange(&mut vpcd, &[0x04]).await), SJA2_ATR);
    send(&mut vpcd, &[0x01]).await; // power on: no answer
    let adm = Adm1::parse(ADM).expect("ADM");
    assert_eq!(
        exchange(&mut vpcd, &Command::verify_adm1(adm.bytes()).to_bytes()).await,
        [0x90, 0x00]
    );
    let select_usim =
        Command::select_by_aid_quiet(&simflow_card::profile::USIM_AID_PREFIX).to_bytes();
    assert_eq!(exchange(&mut vpcd, &select_usim).await, [0x90, 0x00]);
    let write_acc = Command::update_binary(
        simflow_card::apdu::BinaryTarget::Sfi(0x06),
        0,
        &[0x00, 0x40],
    )
    .to_bytes();
    assert_eq!(exchange(&mut vpcd, &write_acc).await, [0x90, 0x00]);

    // A reset drops the ADM verification.
    send(&mut vpcd, &[0x02]).await;
    assert_eq!(exchange(&mut vpcd, &select_usim).await, [0x90, 0x00]);
    assert_eq!(exchange(&mut vpcd, &write_acc).await, [0x69, 0x82]);

    // vpcd closing the socket makes the card reconnect; what it wrote is still there.
    drop(vpcd);
    let (mut vpcd, _) = listener.accept().await.expect("the card reconnects");
    assert_eq!(hex::encode(exchange(&mut vpcd, &[0x04]).await), SJA2_ATR);
    assert_eq!(
        sim.snapshot().file("ADF.USIM/EF.ACC"),
        Some(&[0x00, 0x40][..])
    );
    assert_eq!(sim.counters().total, 5);
    assert_eq!(sim.counters().ins(0xD6), 2);

    card.remove().await;
    let mut buffer = [0u8; 1];
    assert_eq!(vpcd.read(&mut buffer).await.expect("EOF after removal"), 0);
}

#[tokio::test]
async fn the_card_retries_until_vpcd_listens() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("address").port()
    };
    let sim = SoftSim::new(CardImage::blank(ICCID, ADM)).expect("image");
    let mut card = sim.insert(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(card.state(), CardState::Connecting);
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the port now");
    let (_vpcd, _) = listener
        .accept()
        .await
        .expect("the card connects once we listen");
    assert_eq!(
        card.wait_for(|state| state == CardState::Inserted).await,
        CardState::Inserted
    );
}
