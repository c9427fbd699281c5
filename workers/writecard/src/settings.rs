//! The `[writecard]` configuration section.

use serde::Deserialize;
use simflow_card::profile::{self, CardFamily, EhplmnPolicy, FamilyOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// The family of each card type (the inventory's card types) whose blanks are not of
    /// `card_family`, e.g. `[writecard.card_families] USIM_SJS1 = "sysmoUSIM-SJS1"`.
    #[serde(default)]
    pub card_families: BTreeMap<String, String>,
    /// What EF.EHPLMN holds on written cards: `home` (the home PLMN) or `clear`.
    #[serde(default)]
    pub ehplmn: EhplmnPolicy,
    /// The outlet CA's certificate (PEM), for outlets over TLS with a client certificate.
    #[serde(default)]
    pub outlet_ca_cert: Option<PathBuf>,
    /// The outlet CA's private key (PEM, mode 0600). A secret: only its path is configured.
    #[serde(default)]
    pub outlet_ca_key: Option<PathBuf>,
    /// Days an outlet certificate is valid; provisioning the outlet again renews it.
    #[serde(default = "default_outlet_cert_days")]
    pub outlet_cert_days: u32,
    /// Where revoking an outlet's certificate writes the CA's CRL (PEM); none when unset.
    #[serde(default)]
    pub outlet_crl: Option<PathBuf>,
    /// What the centre does about a reader whose serial the writer ledger has not issued to
    /// the outlet (`foreign_reader.rs`): `flag` (default) or `refuse`.
    #[serde(default)]
    pub foreign_reader: ForeignReaderPolicy,
}

/// What the centre does about a reader not issued to its outlet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForeignReaderPolicy {
    /// Record it and publish `writer.foreign_reader`; the work goes on.
    #[default]
    Flag,
    /// Also refuse write requests while the outlet's last reported reader is not issued to it
    /// (before anything is reserved or sent). A card already written is still recorded and
    /// flagged.
    Refuse,
}

impl WritecardSettings {
    /// The name of the family cards of `card_type` belong to. Card types match regardless of
    /// case: configuration layers (environment variables in particular) may lowercase keys.
    pub fn family_name_for(&self, card_type: &str) -> &str {
        self.card_families
            .iter()
            .find(|(listed, _)| listed.eq_ignore_ascii_case(card_type))
            .map_or(&self.card_family, |(_, family)| family)
    }

    /// The family that writes cards of `card_type`, with the configured options; `None` when
    /// the configuration names a family this build does not know.
    pub fn family_for(&self, card_type: &str) -> Option<Box<dyn CardFamily>> {
        let options = FamilyOptions {
            ehplmn: self.ehplmn,
        };
        profile::family_by_name_with(self.family_name_for(card_type), &options)
    }
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

fn default_outlet_cert_days() -> u32 {
    30
}

fn default_card_family() -> String {
    profile::SysmoIsimSja2::NAME.to_owned()
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
            card_families: BTreeMap::new(),
            ehplmn: EhplmnPolicy::default(),
            outlet_ca_cert: None,
            outlet_ca_key: None,
            outlet_cert_days: default_outlet_cert_days(),
            outlet_crl: None,
            foreign_reader: ForeignReaderPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_type_maps_to_its_family_and_others_to_the_default() {
        let mut settings = WritecardSettings::default();
        settings
            .card_families
            .insert("USIM_SJS1".into(), "sysmoUSIM-SJS1".into());
        assert_eq!(settings.family_name_for("USIM_SJS1"), "sysmoUSIM-SJS1");
        assert_eq!(settings.family_name_for("usim_sjs1"), "sysmoUSIM-SJS1");
        assert_eq!(
            settings.family_name_for("USIM128K_NORMAL"),
            "sysmoISIM-SJA2"
        );
        assert_eq!(
            settings.family_for("USIM_SJS1").map(|family| family.name()),
            Some("sysmoUSIM-SJS1")
        );
        settings
            .card_families
            .insert("X".into(), "no such card".into());
        assert!(settings.family_for("X").is_none());
    }
}
