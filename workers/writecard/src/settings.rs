//! The `[writecard]` configuration section.

use serde::Deserialize;

/// Write-card settings.
#[derive(Debug, Clone, Deserialize)]
pub struct WritecardSettings {
    /// How long an outlet may take to start a write script; must not exceed the outlet queue's
    /// message TTL (the script expires there anyway).
    #[serde(default = "default_script_ttl_seconds")]
    pub script_ttl_seconds: u64,
    /// The service provider name written to EF.SPN.
    #[serde(default = "default_spn")]
    pub spn: String,
    /// Digits of the MNC in the IMSIs of the pool (2 or 3).
    #[serde(default = "default_mnc_digits")]
    pub mnc_digits: usize,
    /// The SMS service centre written to EF.SMSP, if any.
    #[serde(default)]
    pub smsp: Option<String>,
    /// Days a number that was written onto a card that was never sold waits before it is offered again.
    #[serde(default = "default_cooling_days")]
    pub msisdn_cooling_days: u32,
    /// The card family blank cards belong to (see `simflow_card::profile::families`).
    #[serde(default = "default_card_family")]
    pub card_family: String,
}

fn default_script_ttl_seconds() -> u64 {
    110
}

fn default_spn() -> String {
    "simflow".to_owned()
}

fn default_mnc_digits() -> usize {
    2
}

fn default_cooling_days() -> u32 {
    90
}

fn default_card_family() -> String {
    "sysmoISIM-SJA2".to_owned()
}

impl Default for WritecardSettings {
    fn default() -> Self {
        WritecardSettings {
            script_ttl_seconds: default_script_ttl_seconds(),
            spn: default_spn(),
            mnc_digits: default_mnc_digits(),
            smsp: None,
            msisdn_cooling_days: default_cooling_days(),
            card_family: default_card_family(),
        }
    }
}
