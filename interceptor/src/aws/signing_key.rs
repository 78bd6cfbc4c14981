//! SigV4 signing keys, derived once per (credentials, day, region, service) and cached.
//!
//! The signing key is `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
//! "aws4_request")`: four HMAC-SHA256 rounds (16 SHA-256 blocks) that give the same 32 bytes
//! for a whole UTC day. Deriving it per request was 16 % of the daemon's instructions
//! (BENCHMARKS.md); [`signing_key`] derives it on the first request of a scope and copies it
//! out of [`SigningKeyCache`] afterwards.
//!
//! A [`SigningKey`] also keeps the HMAC state keyed with it (inner and outer pads absorbed), so
//! a signature costs the blocks of the string to sign plus one, instead of plus three.
//!
//! The cache never holds a secret access key: an entry is identified by the access key id, a
//! keyed 64-bit fingerprint of the secret (SipHash with keys drawn at start-up, so it is no
//! offline oracle for the secret), the date, the region and the service. It holds derived keys,
//! which sign for one day, region and service; neither is ever printed ([`SigningKey`]'s
//! `Debug` says only that it is one).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::{LazyLock, PoisonError, RwLock};

type HmacSha256 = Hmac<Sha256>;

/// Derived keys kept by the process-wide cache: sessions x regions x services a daemon signs
/// for within a day. Past this, the oldest entry of a shard is dropped (and derived again if
/// it is needed again: a cost, never a wrong key).
pub const CACHE_CAPACITY: usize = 256;

/// Shards of the cache: a lookup takes the read lock of one shard only, so connections on
/// different cores rarely touch the same lock word.
const SHARDS: usize = 8;

/// The SigV4 signing key of one (secret, date, region, service).
#[derive(Clone)]
pub struct SigningKey {
    bytes: [u8; 32],
    /// HMAC-SHA256 keyed with `bytes`, nothing absorbed yet; cloned per signature.
    mac: HmacSha256,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A credential for a day: never printed.
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Derives the key of `secret` for `date` (`YYYYMMDD`), `region` and `service`.
    pub fn derive(secret: &str, date: &str, region: &str, service: &str) -> Self {
        #[cfg(test)]
        DERIVATIONS.with(|n| n.set(n.get() + 1));

        // The key of the first round is "AWS4" + secret; HMAC hashes keys longer than a block,
        // so it is assembled in full, not fed in parts.
        let mut first_key = Vec::with_capacity(4 + secret.len());
        first_key.extend_from_slice(b"AWS4");
        first_key.extend_from_slice(secret.as_bytes());
        let k_date = hmac(keyed(&first_key), date.as_bytes());
        let k_region = hmac(keyed(&k_date), region.as_bytes());
        let k_service = hmac(keyed(&k_region), service.as_bytes());
        let bytes = hmac(keyed(&k_service), b"aws4_request");
        SigningKey {
            bytes,
            mac: keyed(&bytes),
        }
    }

    /// The 32 bytes of the key (the chunk signer of a streaming upload keeps them).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// `hex(HMAC-SHA256(key, string_to_sign))`: the SigV4 signature of `string_to_sign`.
    pub fn sign(&self, string_to_sign: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(string_to_sign);
        super::canonical::hex(&mac.finalize().into_bytes())
    }
}

/// HMAC-SHA256 keyed with `key`.
fn keyed(key: &[u8]) -> HmacSha256 {
    // Invariant: HMAC accepts keys of any length (RFC 2104); only fixed-key MACs can refuse.
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn hmac(mut mac: HmacSha256, message: &[u8]) -> [u8; 32] {
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
thread_local! {
    /// Derivations made by this thread: the tests' proof that the cache is used (each test runs
    /// on its own thread, so parallel tests do not disturb the count).
    pub(crate) static DERIVATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Derived keys by (access key id, secret fingerprint, date, region, service); bounded,
/// oldest-first eviction per shard. Reads take one shard's read lock and copy the key out;
/// a miss derives outside any lock, then takes the shard's write lock to insert.
pub struct SigningKeyCache {
    shards: [RwLock<VecDeque<Entry>>; SHARDS],
    per_shard: usize,
    /// Keys of the entry hash (which includes the secret).
    entry_hasher: RandomState,
    /// Keys of the secret's fingerprint, independent of `entry_hasher`.
    secret_hasher: RandomState,
}

/// One cached key with the identity it was derived for.
struct Entry {
    hash: u64,
    access_key_id: Box<str>,
    secret_fingerprint: u64,
    date: Box<str>,
    region: Box<str>,
    service: Box<str>,
    key: SigningKey,
}

/// What a key is looked up by; the secret only as a fingerprint.
struct Scope<'a> {
    hash: u64,
    access_key_id: &'a str,
    secret_fingerprint: u64,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

impl Entry {
    fn is_for(&self, scope: &Scope<'_>) -> bool {
        self.hash == scope.hash
            && self.secret_fingerprint == scope.secret_fingerprint
            && *self.access_key_id == *scope.access_key_id
            && *self.date == *scope.date
            && *self.region == *scope.region
            && *self.service == *scope.service
    }
}

impl std::fmt::Debug for SigningKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyCache")
            .field("len", &self.len())
            .field("capacity", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl SigningKeyCache {
    /// An empty cache holding at most `capacity` keys (rounded up to a multiple of the shard
    /// count, at least one per shard).
    pub fn new(capacity: usize) -> Self {
        SigningKeyCache {
            shards: std::array::from_fn(|_| RwLock::new(VecDeque::new())),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            entry_hasher: RandomState::new(),
            secret_hasher: RandomState::new(),
        }
    }

    /// The key of `secret` (of `access_key_id`) for `date` (`YYYYMMDD`), `region` and
    /// `service`: from the cache, or derived and cached.
    pub fn get(
        &self,
        access_key_id: &str,
        secret: &str,
        date: &str,
        region: &str,
        service: &str,
    ) -> SigningKey {
        let scope = Scope {
            hash: self
                .entry_hasher
                .hash_one((access_key_id, secret, date, region, service)),
            access_key_id,
            secret_fingerprint: self.secret_hasher.hash_one(secret),
            date,
            region,
            service,
        };
        if let Some(key) = self.lookup(&scope) {
            return key;
        }
        let key = SigningKey::derive(secret, date, region, service);
        self.insert(&scope, key.clone());
        key
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, hash: u64) -> &RwLock<VecDeque<Entry>> {
        // The low bits pick the shard; the hash is SipHash output, uniform in every bit.
        &self.shards[(hash as usize) % SHARDS]
    }

    fn lookup(&self, scope: &Scope<'_>) -> Option<SigningKey> {
        // A poisoned lock only means a panic elsewhere while holding it; every write below
        // leaves the deque consistent, so the data is still good.
        let shard = self
            .shard(scope.hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .iter()
            .find(|e| e.is_for(scope))
            .map(|e| e.key.clone())
    }

    fn insert(&self, scope: &Scope<'_>, key: SigningKey) {
        let mut shard = self
            .shard(scope.hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another connection may have derived the same key meanwhile.
        if shard.iter().any(|e| e.is_for(scope)) {
            return;
        }
        if shard.len() >= self.per_shard {
            shard.pop_front();
        }
        shard.push_back(Entry {
            hash: scope.hash,
            access_key_id: scope.access_key_id.into(),
            secret_fingerprint: scope.secret_fingerprint,
            date: scope.date.into(),
            region: scope.region.into(),
            service: scope.service.into(),
            key,
        });
    }
}

/// The process-wide cache [`signing_key`] uses.
static CACHE: LazyLock<SigningKeyCache> = LazyLock::new(|| SigningKeyCache::new(CACHE_CAPACITY));

/// The signing key of the credentials `access_key_id` / `secret` for `date` (`YYYYMMDD`, UTC),
/// `region` and `service`, through the process-wide cache ([`CACHE_CAPACITY`] keys).
pub fn signing_key(
    access_key_id: &str,
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
) -> SigningKey {
    CACHE.get(access_key_id, secret, date, region, service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn time() -> SystemTime {
        humantime::parse_rfc3339("2026-12-04T10:15:00Z").expect("fixed time")
    }

    fn derivations() -> u64 {
        DERIVATIONS.with(std::cell::Cell::get)
    }

    #[test]
    fn derived_key_is_the_one_aws_sigv4_derives() {
        // Long secrets too: HMAC hashes keys over 64 bytes first.
        for secret in [
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "",
            &"s".repeat(100),
        ] {
            let ours = SigningKey::derive(secret, "20261204", "eu-west-3", "sts");
            let theirs =
                aws_sigv4::sign::v4::generate_signing_key(secret, time(), "eu-west-3", "sts");
            assert_eq!(ours.as_bytes().as_slice(), theirs.as_ref(), "{secret:?}");
            let sts = b"AWS4-HMAC-SHA256\n20261204T101500Z\nscope\nhash";
            assert_eq!(
                ours.sign(sts),
                aws_sigv4::sign::v4::calculate_signature(theirs, sts)
            );
        }
    }

    #[test]
    fn cache_returns_the_fresh_key_and_derives_once() {
        let cache = SigningKeyCache::new(16);
        let before = derivations();
        let first = cache.get("AKID", "secret", "20261204", "us-east-1", "s3");
        let again = cache.get("AKID", "secret", "20261204", "us-east-1", "s3");
        assert_eq!(derivations() - before, 1, "the second lookup is a hit");
        let fresh = SigningKey::derive("secret", "20261204", "us-east-1", "s3");
        assert_eq!(first.as_bytes(), fresh.as_bytes());
        assert_eq!(again.as_bytes(), fresh.as_bytes());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn every_part_of_the_scope_selects_its_own_key() {
        let cache = SigningKeyCache::new(64);
        let base = ["AKID", "secret", "20261204", "us-east-1", "s3"];
        let variants = [
            ["AKID2", "secret", "20261204", "us-east-1", "s3"],
            ["AKID", "secret2", "20261204", "us-east-1", "s3"],
            ["AKID", "secret", "20261205", "us-east-1", "s3"],
            ["AKID", "secret", "20261204", "eu-west-1", "s3"],
            ["AKID", "secret", "20261204", "us-east-1", "sts"],
        ];
        let get = |[a, s, d, r, n]: [&str; 5]| cache.get(a, s, d, r, n);
        get(base);
        let before = derivations();
        let keys = variants.map(get);
        assert_eq!(
            derivations() - before,
            5,
            "no variant was served another's key"
        );
        for (v, key) in variants.iter().zip(&keys) {
            let fresh = SigningKey::derive(v[1], v[2], v[3], v[4]);
            assert_eq!(key.as_bytes(), fresh.as_bytes(), "{v:?}");
        }
        assert_eq!(cache.len(), 6);
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_oldest() {
        let cache = SigningKeyCache::new(SHARDS * 2);
        for day in 0..200 {
            cache.get(
                "AKID",
                "secret",
                &format!("2026{day:04}"),
                "us-east-1",
                "s3",
            );
        }
        assert!(cache.len() <= SHARDS * 2, "{}", cache.len());

        // The newest entry is still there; the first is gone.
        let before = derivations();
        cache.get("AKID", "secret", "20260199", "us-east-1", "s3");
        assert_eq!(derivations(), before);
        cache.get("AKID", "secret", "20260000", "us-east-1", "s3");
        assert_eq!(derivations(), before + 1);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let cache = SigningKeyCache::new(8);
        let key = cache.get("AKID", "topsecret", "20261204", "us-east-1", "s3");
        let shown = format!("{key:?} {cache:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(!shown.contains(&hex::encode(key.as_bytes())), "{shown}");
        assert_eq!(format!("{key:?}"), "SigningKey(..)");
    }
}
