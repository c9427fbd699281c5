//! `simflow bench import`: the card data import next to a raw `COPY` of the same rows, in one
//! run on one database, so the price of validation, encryption, staging and the all-or-nothing
//! promotion can be read as a ratio.
//!
//! It creates a scratch database on the configured server (dropped at the end), generates a
//! pySim-shell style file with random keys into the temp directory, loads it once with a plain
//! `COPY … (FORMAT csv)` into a plain table (no validation, no encryption, no index) and once
//! through `simflow_carddata::Importer`, and prints both times and their ratio: the ratio is
//! against that plain `COPY`, the cheapest load of the same bytes. For context it also times a
//! second raw baseline, the same `COPY` into a table with B-tree indexes on `iccid` and `imsi`
//! (the look-ups a card table needs), and prints the import's ratio to it too; that second
//! figure is never the one held to the aim. It is not a test and asserts nothing beyond the
//! import accepting every row.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::RngCore;
use simflow_carddata::import::{CardFile, ImportRequest, Importer, Limits, NoProgress};
use simflow_carddata::kek::{Kek, KekRing};
use simflow_carddata::transport::TransportKeys;
use simflow_runtime::Settings;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

/// Arguments of `bench import`.
#[derive(Debug, Args)]
pub struct ImportBenchArgs {
    /// Card rows in the generated file.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
}

/// The Luhn check digit of a digit string.
fn luhn(body: &str) -> u32 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(position, byte)| {
            let digit = u32::from(byte - b'0');
            if position % 2 == 0 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// Writes a file of `rows` cards with random keys (ICCIDs from a random base, so runs differ).
pub fn generate_file(path: &Path, rows: u64) -> anyhow::Result<()> {
    let mut random = rand::rng();
    let base = u64::from(random.next_u32()) % 10_000_000;
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "ICCID,IMSI,KI,OPC,ADM1,PIN1,PUK1")?;
    let mut keys = [0u8; 32];
    for index in 0..rows {
        // 18 digits of body and a Luhn digit: a 19-digit ICCID.
        let body = format!("8986{base:07}{index:07}");
        let iccid = format!("{body}{}", luhn(&body));
        random.fill_bytes(&mut keys);
        let imsi = format!("46000{:03}{index:07}", base % 1000);
        writeln!(
            out,
            "{iccid},{imsi},{},{},{:08},{:04},{:08}",
            hex::encode(&keys[..16]),
            hex::encode(&keys[16..]),
            random.next_u32() % 100_000_000,
            random.next_u32() % 10_000,
            random.next_u32() % 100_000_000
        )?;
    }
    out.flush()?;
    Ok(())
}

fn per_second(rows: u64, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// Runs the benchmark.
pub async fn run(settings: Settings, args: ImportBenchArgs) -> anyhow::Result<()> {
    let base_options = simflow_runtime::db::connect_options(&settings.database.url)?;
    let database = format!(
        "simflow_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let mut admin = PgConnection::connect_with(&base_options.clone().database("postgres"))
        .await
        .context("connecting to the postgres maintenance database")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await?;
    let file = std::env::temp_dir().join(format!("{database}.csv"));
    let outcome = measure(&settings, &base_options, &database, &file, args.rows).await;
    let _ = std::fs::remove_file(&file);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    outcome
}

async fn measure(
    settings: &Settings,
    base_options: &sqlx::postgres::PgConnectOptions,
    database: &str,
    file: &PathBuf,
    rows: u64,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(base_options.clone().database(database))
        .await?;
    simflow_carddata::migrate(&pool).await?;

    let generating = Instant::now();
    {
        let file = file.clone();
        tokio::task::spawn_blocking(move || generate_file(&file, rows)).await??;
    }
    let size = std::fs::metadata(file)?.len();
    eprintln!(
        "generated {rows} rows ({:.1} MB) in {:.1}s",
        size as f64 / 1e6,
        generating.elapsed().as_secs_f64()
    );

    // Raw COPY: the same bytes into a plain table, no validation, no encryption, no index.
    let mut connection = pool.acquire().await?;
    sqlx::raw_sql(
        "CREATE TABLE bench_raw (iccid text, imsi text, ki text, opc text, adm1 text, pin1 text, puk1 text)",
    )
    .execute(&mut *connection)
    .await?;
    let (raw_rows, raw_elapsed) = raw_copy(&mut connection, "bench_raw", file).await?;
    drop(connection);

    // Our import: both passes, validation, AES-GCM sealing, staging, promotion.
    let keks = match KekRing::from_settings(&settings.carddata) {
        Ok(ring) if ring.current().is_ok() => ring,
        _ => {
            let mut key = zeroize::Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(key.as_mut());
            KekRing::new(Some(Kek::new("bench", &key)?), Vec::new())?
        }
    };
    let importer = Importer::new(
        pool.clone(),
        Arc::new(keks),
        Arc::new(TransportKeys::default()),
        Limits::from_settings(&settings.carddata),
    );
    let request = ImportRequest {
        file_name: "bench.csv".into(),
        card_type: "BENCH".into(),
        transport_key: None,
        staff_id: "bench".into(),
    };
    let import_started = Instant::now();
    let report = importer
        .import(CardFile::Path(file.clone()), &request, &NoProgress)
        .await?;
    let import_elapsed = import_started.elapsed();

    // The second baseline, for context only (after the import, so its WAL does not weigh on
    // the import): the same COPY into a table with B-tree indexes on iccid and imsi.
    let mut connection = pool.acquire().await?;
    sqlx::raw_sql(
        "CREATE TABLE bench_raw_indexed (iccid text, imsi text, ki text, opc text, adm1 text, pin1 text, puk1 text); \
         CREATE INDEX ON bench_raw_indexed (iccid); CREATE INDEX ON bench_raw_indexed (imsi)",
    )
    .execute(&mut *connection)
    .await?;
    let (_, indexed_elapsed) = raw_copy(&mut connection, "bench_raw_indexed", file).await?;
    drop(connection);
    pool.close().await;
    anyhow::ensure!(
        report.accepted == rows && report.rejected == 0,
        "the import accepted {} and refused {} of {rows} rows",
        report.accepted,
        report.rejected
    );

    let ratio = import_elapsed.as_secs_f64() / raw_elapsed.as_secs_f64().max(f64::EPSILON);
    let indexed_ratio =
        import_elapsed.as_secs_f64() / indexed_elapsed.as_secs_f64().max(f64::EPSILON);
    println!(
        "card data import benchmark, {rows} rows, {:.1} MB",
        size as f64 / 1e6
    );
    println!(
        "  raw COPY (csv, no checks):  {:>8.2}s  {:>10.0} rows/s  ({raw_rows} rows)",
        raw_elapsed.as_secs_f64(),
        per_second(rows, raw_elapsed)
    );
    println!(
        "  raw COPY, indexed table:    {:>8.2}s  {:>10.0} rows/s  (B-tree on iccid and imsi; context only)",
        indexed_elapsed.as_secs_f64(),
        per_second(rows, indexed_elapsed)
    );
    println!(
        "  simflow carddata import:    {:>8.2}s  {:>10.0} rows/s",
        import_elapsed.as_secs_f64(),
        per_second(rows, import_elapsed)
    );
    println!("  ratio import / raw COPY:    {ratio:>8.2}x (aim: at most 3x)");
    println!("  ratio import / indexed COPY:{indexed_ratio:>8.2}x (context only)");
    Ok(())
}

/// `COPY`s the file as CSV into `table` on `connection`: rows and time.
async fn raw_copy(
    connection: &mut PgConnection,
    table: &str,
    file: &Path,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut copy = connection
        .copy_in_raw(&format!(
            "COPY {table} FROM STDIN (FORMAT csv, HEADER true)"
        ))
        .await?;
    let mut reader = std::fs::File::open(file)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let count = reader.read(&mut buffer)?;
        if count == 0 {
            break;
        }
        copy.send(&buffer[..count]).await?;
    }
    let rows = copy.finish().await?;
    Ok((rows, started.elapsed()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_files_are_valid_card_data() {
        let path = std::env::temp_dir().join(format!("simflow_gen_{}.csv", uuid::Uuid::new_v4()));
        super::generate_file(&path, 3).expect("written");
        let text = std::fs::read_to_string(&path).expect("readable");
        let _ = std::fs::remove_file(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        for line in &lines[1..] {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields[0].len(), 19);
            assert_eq!(simflow_card_luhn(fields[0]), Ok(true));
            assert_eq!(fields[1].len(), 15);
        }
    }

    fn simflow_card_luhn(number: &str) -> Result<bool, ()> {
        let (body, check) = number.split_at(number.len() - 1);
        Ok(super::luhn(body).to_string() == check)
    }
}
