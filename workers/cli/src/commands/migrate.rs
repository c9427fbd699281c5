//! `simflow migrate`: create the database if needed and apply every crate's migrations.

use simflow_runtime::Settings;

/// Runs the migrations.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let pool = crate::pipeline::migrate_all(settings).await?;
    pool.close().await;
    println!("database migrated");
    Ok(())
}
