//! The node's key ring: the key scripts are sealed to now, and during a rotation's grace the
//! key they were sealed to before. Secret keys are made here and never leave the node.
//!
//! Files, all beside `[outlet] key_file` and all mode 0600:
//! - `<key_file>`: the current secret key (base64), as `simflow outlet keygen` writes it;
//! - `<key_file>.next`: a new key made by [`crate::rotate_key`] and announced to the centre, not yet
//!   current (only between the announcement and the rename; a rotation interrupted here is
//!   finished by running it again);
//! - `<key_file>.previous`: the key before the last rotation and, on its second line, when it
//!   retires (RFC 3339). After that time the node deletes the file and refuses scripts sealed
//!   to it with `SCRIPT_KEY_RETIRED`.
//!
//! A running node finds a rotation by itself: it reads the (small) files again before every
//! script it opens and at every heartbeat, which is also when a key whose grace has ended is
//! deleted.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use simflow_seal::OutletKeyPair;
use zeroize::Zeroizing;

/// Why a script could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Sealed to the key the node had before its last rotation, and its grace has ended.
    #[error("sealed to key {0}, retired after the rotation's grace")]
    Retired(String),
    /// Sealed to a key this node never held (another outlet's, or a provisioning mistake).
    #[error("sealed for key {sealed_for} but this node holds key {holds}")]
    Unknown {
        /// The envelope's fingerprint.
        sealed_for: String,
        /// The node's current fingerprint.
        holds: String,
    },
    /// The right key, but the box does not open (altered).
    #[error("the sealed script does not open: {0}")]
    CannotOpen(simflow_seal::SealError),
}

struct Previous {
    keys: OutletKeyPair,
    retires_at: DateTime<Utc>,
}

struct Loaded {
    current: OutletKeyPair,
    next: Option<OutletKeyPair>,
    previous: Option<Previous>,
    /// Fingerprints of keys this node retired while running (so their scripts get a clear
    /// answer rather than "unknown key").
    retired: Vec<String>,
}

impl Loaded {
    fn fingerprints(&self) -> Vec<String> {
        [
            Some(&self.current),
            self.next.as_ref(),
            self.previous.as_ref().map(|previous| &previous.keys),
        ]
        .into_iter()
        .flatten()
        .map(|keys| keys.public_key().fingerprint())
        .collect()
    }
}

/// The node's keys.
pub struct KeyRing {
    key_file: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_file", &self.key_file)
            .field("current", &self.fingerprint())
            .finish()
    }
}

fn sibling(key_file: &Path, suffix: &str) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `<key_file>.next`.
pub fn next_file(key_file: &Path) -> PathBuf {
    sibling(key_file, ".next")
}

/// `<key_file>.previous`.
pub fn previous_file(key_file: &Path) -> PathBuf {
    sibling(key_file, ".previous")
}

fn write_secret_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn read_previous(key_file: &Path) -> anyhow::Result<Option<Previous>> {
    let path = previous_file(key_file);
    if !path.exists() {
        return Ok(None);
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    );
    let mut lines = text.lines();
    let keys = OutletKeyPair::from_base64(lines.next().unwrap_or_default().trim())
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    let retires_at = DateTime::parse_from_rfc3339(lines.next().unwrap_or_default().trim())
        .with_context(|| format!("{}: the second line is the retirement time", path.display()))?
        .with_timezone(&Utc);
    Ok(Some(Previous { keys, retires_at }))
}

fn read_files(key_file: &Path) -> anyhow::Result<Loaded> {
    let current = crate::load_key_file(key_file)?;
    let next_path = next_file(key_file);
    let next = if next_path.exists() {
        Some(crate::load_key_file(&next_path)?)
    } else {
        None
    };
    Ok(Loaded {
        current,
        next,
        previous: read_previous(key_file)?,
        retired: Vec::new(),
    })
}

impl KeyRing {
    /// A ring of one key that never changes (no files: tools and tests).
    pub fn fixed(keys: OutletKeyPair) -> KeyRing {
        KeyRing {
            key_file: None,
            loaded: Mutex::new(Loaded {
                current: keys,
                next: None,
                previous: None,
                retired: Vec::new(),
            }),
        }
    }

    /// The ring kept in `key_file` and its siblings.
    pub fn load(key_file: &Path) -> anyhow::Result<KeyRing> {
        let ring = KeyRing {
            key_file: Some(key_file.to_owned()),
            loaded: Mutex::new(read_files(key_file)?),
        };
        ring.refresh();
        Ok(ring)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fingerprint of the current key.
    pub fn fingerprint(&self) -> String {
        self.lock().current.public_key().fingerprint()
    }

    /// Reads the key files again (a rotation may have happened) and deletes the previous key
    /// once its grace has ended. A key that disappears from the files counts as retired.
    pub fn refresh(&self) {
        if let Some(key_file) = &self.key_file {
            match read_files(key_file) {
                Ok(mut fresh) => {
                    let mut loaded = self.lock();
                    let kept = fresh.fingerprints();
                    let mut retired = std::mem::take(&mut loaded.retired);
                    for fingerprint in loaded.fingerprints() {
                        if !kept.contains(&fingerprint) && !retired.contains(&fingerprint) {
                            retired.push(fingerprint);
                        }
                    }
                    fresh.retired = retired;
                    *loaded = fresh;
                }
                Err(error) => tracing::error!(%error, "cannot read the key files again"),
            }
        }
        self.retire_expired();
    }

    fn retire_expired(&self) {
        let mut loaded = self.lock();
        let expired = loaded
            .previous
            .as_ref()
            .is_some_and(|previous| Utc::now() >= previous.retires_at);
        if !expired {
            return;
        }
        if let Some(previous) = loaded.previous.take() {
            let fingerprint = previous.keys.public_key().fingerprint();
            if let Some(key_file) = &self.key_file {
                let path = previous_file(key_file);
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(key = %fingerprint, "the previous key's grace ended; its secret key file is deleted");
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        tracing::error!(%error, path = %path.display(), "cannot delete the retired key file");
                    }
                }
            }
            loaded.retired.push(fingerprint);
        }
    }

    /// Opens a script sealed to `sealed_for`: the current key, the next one (a rotation under
    /// way) or the previous one within its grace, after reading the key files again.
    pub fn open(
        &self,
        sealed_for: &str,
        sealed_script: &str,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.refresh();
        let loaded = self.lock();
        let keys = [
            Some(&loaded.current),
            loaded.next.as_ref(),
            loaded.previous.as_ref().map(|previous| &previous.keys),
        ]
        .into_iter()
        .flatten()
        .find(|keys| keys.public_key().fingerprint() == sealed_for);
        match keys {
            Some(keys) => keys.open(sealed_script).map_err(KeyError::CannotOpen),
            None if loaded.retired.iter().any(|retired| retired == sealed_for) => {
                Err(KeyError::Retired(sealed_for.to_owned()))
            }
            None => Err(KeyError::Unknown {
                sealed_for: sealed_for.to_owned(),
                holds: loaded.current.public_key().fingerprint(),
            }),
        }
    }
}

/// A rotation ready to announce: the new key is in `<key_file>.next`.
#[derive(Debug)]
pub struct PreparedRotation {
    /// The key the centre seals to now.
    pub previous: OutletKeyPair,
    /// The new key.
    pub next: OutletKeyPair,
    /// When the previous key retires.
    pub previous_key_retires_at: DateTime<Utc>,
}

/// Makes a new key pair in `<key_file>.next` (or takes the one an interrupted rotation left
/// there). Refused while the key before the last rotation is still in its grace: rotating
/// again would cut that grace short.
pub fn prepare_rotation(key_file: &Path, grace: Duration) -> anyhow::Result<PreparedRotation> {
    if let Some(previous) = read_previous(key_file)?
        && Utc::now() < previous.retires_at
    {
        anyhow::bail!(
            "the key before the last rotation ({}) is in its grace until {}; rotate again after that",
            previous.keys.public_key().fingerprint(),
            previous.retires_at.to_rfc3339()
        );
    }
    let previous = crate::load_key_file(key_file)?;
    let next_path = next_file(key_file);
    let next = if next_path.exists() {
        crate::load_key_file(&next_path)?
    } else {
        crate::generate_key_file(&next_path)?
    };
    Ok(PreparedRotation {
        previous,
        next,
        previous_key_retires_at: Utc::now()
            + chrono::Duration::from_std(grace).context("the key grace is too long")?,
    })
}

/// Makes the announced key current: the old key goes to `<key_file>.previous` with its
/// retirement time, the new one from `<key_file>.next` to `<key_file>`.
pub fn complete_rotation(key_file: &Path, rotation: &PreparedRotation) -> anyhow::Result<()> {
    let previous_path = previous_file(key_file);
    let staged = sibling(key_file, ".previous.new");
    let _ = std::fs::remove_file(&staged);
    let text = Zeroizing::new(format!(
        "{}\n{}\n",
        rotation.previous.secret_to_base64().as_str(),
        rotation.previous_key_retires_at.to_rfc3339()
    ));
    write_secret_file(&staged, &text)?;
    std::fs::rename(&staged, &previous_path)
        .with_context(|| format!("writing {}", previous_path.display()))?;
    std::fs::rename(next_file(key_file), key_file)
        .with_context(|| format!("making the new key current in {}", key_file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "simflow-keys-{name}-{}-{}",
            std::process::id(),
            uuid_like()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn uuid_like() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default()
    }

    #[test]
    fn a_rotated_ring_opens_both_keys_within_the_grace_and_only_the_new_one_after() {
        let dir = scratch("rotate");
        let key_file = dir.join("node.key");
        let old = crate::generate_key_file(&key_file).expect("key");
        let ring = KeyRing::load(&key_file).expect("ring");
        let rotation = prepare_rotation(&key_file, Duration::from_millis(300)).expect("prepared");
        let sealed_old = old.public_key().seal(b"old").expect("sealed");
        let sealed_new = rotation.next.public_key().seal(b"new").expect("sealed");
        let new_fingerprint = rotation.next.public_key().fingerprint();
        // Announced, not yet current: the ring finds the next key.
        assert_eq!(
            ring.open(&new_fingerprint, &sealed_new)
                .expect("opens")
                .as_slice(),
            b"new"
        );
        complete_rotation(&key_file, &rotation).expect("completed");
        assert!(
            prepare_rotation(&key_file, Duration::from_secs(1)).is_err(),
            "not twice within the grace"
        );
        let ring = KeyRing::load(&key_file).expect("ring");
        assert_eq!(ring.fingerprint(), new_fingerprint);
        let old_fingerprint = old.public_key().fingerprint();
        assert_eq!(
            ring.open(&old_fingerprint, &sealed_old)
                .expect("opens")
                .as_slice(),
            b"old"
        );
        std::thread::sleep(Duration::from_millis(400));
        assert!(matches!(
            ring.open(&old_fingerprint, &sealed_old),
            Err(KeyError::Retired(_))
        ));
        assert!(
            !previous_file(&key_file).exists(),
            "the old secret key is deleted"
        );
        assert_eq!(
            ring.open(&new_fingerprint, &sealed_new)
                .expect("opens")
                .as_slice(),
            b"new"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
