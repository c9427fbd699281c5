//! `simflow seed`: load organisation data and receive blank cards into stock.

use std::fs::File;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use simflow_inventory::org::{self, Receipt};
use simflow_runtime::Settings;

/// What to seed.
#[derive(Debug, Subcommand)]
pub enum SeedCommand {
    /// Load units, warehouses, staff IDs and agents from a directory of CSV files.
    Org {
        /// Directory holding units.csv, staff.csv and agents.csv.
        #[arg(long, default_value = "config/org")]
        dir: PathBuf,
    },
    /// Receive consecutive blank cards into a warehouse.
    Cards(CardsArgs),
}

/// Arguments of `seed cards`.
#[derive(Debug, Args)]
pub struct CardsArgs {
    /// Receiving warehouse code.
    #[arg(long)]
    pub warehouse: String,
    /// Card type code.
    #[arg(long, default_value = "USIM128K_NORMAL")]
    pub card_type: String,
    /// Department ID HQ CRM holds for the cards.
    #[arg(long)]
    pub department: String,
    /// ICCID body (without check digit) of the first card.
    #[arg(long)]
    pub first_body: u64,
    /// How many cards.
    #[arg(long)]
    pub count: u64,
}

/// Loads the org files from `dir` into the database.
pub async fn load_org(
    db: &mut sqlx::PgConnection,
    dir: &std::path::Path,
) -> anyhow::Result<(usize, usize, usize)> {
    let open = |name: &str| {
        let path = dir.join(name);
        File::open(&path).with_context(|| format!("opening {}", path.display()))
    };
    let units = org::load_units(db, open("units.csv")?).await?;
    let staff = org::load_staff(db, open("staff.csv")?).await?;
    let agents = org::load_agents(db, open("agents.csv")?).await?;
    Ok((units, staff, agents))
}

/// Runs a seed command.
pub async fn run(settings: &Settings, command: SeedCommand) -> anyhow::Result<()> {
    let pool = crate::pipeline::migrate_all(settings).await?;
    let mut transaction = pool.begin().await?;
    match command {
        SeedCommand::Org { dir } => {
            let (units, staff, agents) = load_org(&mut transaction, &dir).await?;
            println!("loaded {units} units, {staff} staff lines, {agents} agents");
        }
        SeedCommand::Cards(args) => {
            let receipt = Receipt {
                warehouse: args.warehouse,
                card_type: args.card_type,
                department_id: args.department,
                first_body: args.first_body,
                count: args.count,
            };
            let received = org::receive_blank_cards(&mut transaction, &receipt, "seed").await?;
            println!(
                "received {received} new blank cards into {}",
                receipt.warehouse
            );
        }
    }
    transaction.commit().await?;
    pool.close().await;
    Ok(())
}
