//! Profiles and their pinned relays, kept in the encrypted store.
//!
//! A profile is one unlinkable identity of the user: its own display name, its own pinned
//! relays (where its inbound queues are created), and later its own contacts and keys.
//! Nothing links two profiles: they share no key and no relay session. Profile data is sent
//! only to accepted contacts.

use crate::store::{Store, StoreError};
use petrel_federation::RelayAddress;
use serde::{Deserialize, Serialize};

const PROFILES: &str = "profiles";
const SETTINGS: &str = "settings";
const CURRENT: &[u8] = b"current-profile";

/// Longest profile name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most relays a profile may pin.
pub const MAX_PINNED: usize = 16;

/// A profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The local name the user picks it by (never sent anywhere).
    pub name: String,
    /// What contacts see.
    pub display_name: String,
    /// An optional short bio, sent to contacts.
    pub bio: Option<String>,
    /// Relays this profile's inbound queues are created on, preferred first.
    pub relays: Vec<RelayAddress>,
    /// Contacts must reach this profile through one of its pinned relays (RESTRICT).
    pub require_pinned_forwarding: bool,
    /// Inbound queues older than this many seconds are rotated at the next sync.
    pub rotation_secs: u64,
}

/// Why a profile operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No profile with that name.
    #[error("no profile named `{0}`; `petrel profile list` shows them")]
    NotFound(String),
    /// A profile with that name exists.
    #[error("a profile named `{0}` already exists")]
    Exists(String),
    /// The name is empty, too long, or has control characters.
    #[error("profile names are 1 to {MAX_NAME_LEN} bytes of printable text")]
    BadName,
    /// A profile needs at least one pinned relay.
    #[error("a profile needs at least one pinned relay (--relay petrel://...)")]
    NoRelay,
    /// The relay is already pinned, or not pinned.
    #[error("relay {0} is {1}")]
    Relay(String, &'static str),
    /// Too many pinned relays.
    #[error("a profile may pin at most {MAX_PINNED} relays")]
    TooManyRelays,
    /// The display name or bio is too long or has control characters.
    #[error(
        "display names are 1 to {} bytes and bios at most {} bytes, of printable text",
        crate::payload::MAX_DISPLAY_NAME_LEN,
        crate::payload::MAX_BIO_LEN
    )]
    BadCard,
    /// A rotation period of zero.
    #[error("the rotation period must be at least one second")]
    BadRotation,
    /// No profile is selected and none was named.
    #[error("no profile selected: create one with `petrel profile create NAME --relay ADDRESS`")]
    NoneSelected,
}

fn check_name(name: &str) -> Result<(), ProfileError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ProfileError::BadName);
    }
    Ok(())
}

fn check_card(display_name: &str, bio: Option<&str>) -> Result<(), ProfileError> {
    let printable = |t: &str| !t.chars().any(char::is_control);
    if display_name.is_empty()
        || display_name.len() > crate::payload::MAX_DISPLAY_NAME_LEN
        || !printable(display_name)
        || bio.is_some_and(|b| b.len() > crate::payload::MAX_BIO_LEN || !printable(b))
    {
        return Err(ProfileError::BadCard);
    }
    Ok(())
}

/// Profile operations over a store.
#[derive(Debug)]
pub struct Profiles<'a> {
    store: &'a Store,
}

impl<'a> Profiles<'a> {
    /// Profiles in `store`.
    pub fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// Creates a profile; the first one created becomes the current one.
    pub fn create<R: rand_core::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        profile: Profile,
    ) -> Result<(), ProfileError> {
        check_name(&profile.name)?;
        check_card(&profile.display_name, profile.bio.as_deref())?;
        if profile.relays.is_empty() {
            return Err(ProfileError::NoRelay);
        }
        if profile.relays.len() > MAX_PINNED {
            return Err(ProfileError::TooManyRelays);
        }
        if profile.rotation_secs == 0 {
            return Err(ProfileError::BadRotation);
        }
        if self.get(&profile.name).is_ok() {
            return Err(ProfileError::Exists(profile.name));
        }
        self.store
            .put(rng, PROFILES, profile.name.as_bytes(), &profile)?;
        if self.current_name()?.is_none() {
            self.store.put(rng, SETTINGS, CURRENT, &profile.name)?;
        }
        Ok(())
    }

    /// A profile by name.
    pub fn get(&self, name: &str) -> Result<Profile, ProfileError> {
        self.store
            .get(PROFILES, name.as_bytes())?
            .ok_or_else(|| ProfileError::NotFound(name.to_string()))
    }

    /// Every profile, by name.
    pub fn list(&self) -> Result<Vec<Profile>, ProfileError> {
        let mut all: Vec<Profile> = self
            .store
            .list(PROFILES)?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The name of the current profile, if any.
    pub fn current_name(&self) -> Result<Option<String>, ProfileError> {
        Ok(self.store.get(SETTINGS, CURRENT)?)
    }

    /// The profile to act on: `name` if given, else the current one.
    pub fn resolve(&self, name: Option<&str>) -> Result<Profile, ProfileError> {
        match name {
            Some(n) => self.get(n),
            None => {
                let current = self.current_name()?.ok_or(ProfileError::NoneSelected)?;
                self.get(&current)
            }
        }
    }

    /// Makes `name` the current profile.
    pub fn select<R: rand_core::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        name: &str,
    ) -> Result<(), ProfileError> {
        self.get(name)?;
        self.store.put(rng, SETTINGS, CURRENT, &name.to_string())?;
        Ok(())
    }

    /// Deletes a profile (and clears the selection if it was current).
    pub fn delete(&self, name: &str) -> Result<(), ProfileError> {
        if !self.store.delete(PROFILES, name.as_bytes())? {
            return Err(ProfileError::NotFound(name.to_string()));
        }
        if self.current_name()?.as_deref() == Some(name) {
            self.store.delete(SETTINGS, CURRENT)?;
        }
        Ok(())
    }

    /// Pins a relay to a profile.
    pub fn pin<R: rand_core::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        name: &str,
        relay: RelayAddress,
    ) -> Result<(), ProfileError> {
        let mut p = self.get(name)?;
        if p.relays.iter().any(|r| r.key() == relay.key()) {
            return Err(ProfileError::Relay(relay.to_string(), "already pinned"));
        }
        if p.relays.len() >= MAX_PINNED {
            return Err(ProfileError::TooManyRelays);
        }
        p.relays.push(relay);
        self.store.put(rng, PROFILES, name.as_bytes(), &p)?;
        Ok(())
    }

    /// Unpins a relay (by its key); the last relay cannot be unpinned.
    pub fn unpin<R: rand_core::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        name: &str,
        relay: &RelayAddress,
    ) -> Result<(), ProfileError> {
        let mut p = self.get(name)?;
        let before = p.relays.len();
        p.relays.retain(|r| r.key() != relay.key());
        if p.relays.len() == before {
            return Err(ProfileError::Relay(relay.to_string(), "not pinned"));
        }
        if p.relays.is_empty() {
            return Err(ProfileError::NoRelay);
        }
        self.store.put(rng, PROFILES, name.as_bytes(), &p)?;
        Ok(())
    }

    /// Sets how often the profile's inbound queues rotate.
    pub fn set_rotation<R: rand_core::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        name: &str,
        secs: u64,
    ) -> Result<(), ProfileError> {
        if secs == 0 {
            return Err(ProfileError::BadRotation);
        }
        let mut p = self.get(name)?;
        p.rotation_secs = secs;
        self.store.put(rng, PROFILES, name.as_bytes(), &p)?;
        Ok(())
    }

    /// Changes what contacts see (`None` leaves a field as it is; a bio of `Some("")`
    /// removes it) and returns the updated profile.
    pub fn edit_card<R: rand_core::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        name: &str,
        display_name: Option<String>,
        bio: Option<String>,
    ) -> Result<Profile, ProfileError> {
        let mut p = self.get(name)?;
        if let Some(d) = display_name {
            p.display_name = d;
        }
        if let Some(b) = bio {
            p.bio = if b.is_empty() { None } else { Some(b) };
        }
        check_card(&p.display_name, p.bio.as_deref())?;
        self.store.put(rng, PROFILES, name.as_bytes(), &p)?;
        Ok(p)
    }
}
