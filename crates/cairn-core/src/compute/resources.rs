//! What a provider offers and what a unit needs, and the text forms of sizes
//! and durations used by job files and command-line flags.
//!
//! - [`Offer`]: a provider's advertised cpus (= units it runs at once),
//!   memory, availability [`Schedule`], whether it runs only while the
//!   machine is idle, and its measured speed in fuel per second.
//! - [`Need`]: a unit's memory, fuel limit, estimated run time and
//!   per-attempt deadline. [`Offer::expected_secs`] turns a need into the
//!   wall-clock time the scheduler must fit into a window.
//! - [`parse_size`] / [`format_size`]: `64MiB`, `4GiB`, `1.5GB`, `512`.
//! - [`parse_duration`] / [`format_duration`]: `90s`, `10m`, `2h`, `1h30m`.
//!
//! Invariants: an offer has at least one cpu and at most [`MAX_CPUS`], and
//! sizes and durations parse to at most [`MAX_SIZE`] bytes and
//! [`MAX_DURATION_SECS`] seconds, so arithmetic on them cannot overflow a
//! `u64` in the scheduler.

use serde::{Deserialize, Serialize};

use super::window::Schedule;

/// Format version of a serialized [`Offer`].
pub const OFFER_VERSION: u16 = 1;
/// Most cpus (concurrent units) one provider may offer.
pub const MAX_CPUS: u16 = 1024;
/// Largest size accepted: 1 PiB.
pub const MAX_SIZE: u64 = 1 << 50;
/// Longest duration accepted: 365 days.
pub const MAX_DURATION_SECS: u64 = 365 * 86_400;
/// Longest size or duration text accepted, in bytes.
const MAX_TEXT: usize = 64;

/// A size or duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantityError {
    /// No digits.
    #[error("{text:?} is not a size: write a number and a unit, like 64MiB or 4GiB")]
    BadSize {
        /// The text.
        text: String,
    },
    /// An unknown size unit.
    #[error("{text:?}: unknown size unit {unit:?} (use B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB)")]
    SizeUnit {
        /// The text.
        text: String,
        /// The unit.
        unit: String,
    },
    /// Larger than [`MAX_SIZE`].
    #[error("{text:?} is larger than the 1 PiB limit")]
    SizeTooLarge {
        /// The text.
        text: String,
    },
    /// Not a duration.
    #[error("{text:?} is not a duration: write e.g. 90s, 10m, 2h, 1d or 1h30m")]
    BadDuration {
        /// The text.
        text: String,
    },
    /// Longer than [`MAX_DURATION_SECS`].
    #[error("{text:?} is longer than the 365-day limit")]
    DurationTooLong {
        /// The text.
        text: String,
    },
}

/// Parses a size: a number (decimals allowed) and an optional unit, binary
/// (`KiB`, `MiB`, `GiB`, `TiB`) or decimal (`KB`, `MB`, `GB`, `TB`; `K`,
/// `M`, `G`, `T` are binary, as in most tools' flags). No unit means bytes.
/// Case-insensitive; spaces between number and unit are allowed. A fraction
/// of a byte is dropped.
pub fn parse_size(text: &str) -> Result<u64, QuantityError> {
    let bad = || QuantityError::BadSize {
        text: text.to_string(),
    };
    let t = text.trim();
    if t.len() > MAX_TEXT {
        return Err(bad());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(QuantityError::SizeUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            });
        }
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty()
        || frac.contains('.')
        || frac.len() > 9
        || !int.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let too_large = || QuantityError::SizeTooLarge {
        text: text.to_string(),
    };
    // 20 digits overflow u64 anyway; reject before parsing.
    if int.len() > 19 {
        return Err(too_large());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = int * u128::from(mult) + frac_value * u128::from(mult) / scale;
    if bytes > u128::from(MAX_SIZE) {
        return Err(too_large());
    }
    Ok(bytes as u64)
}

/// A size for people: `64 MiB`, `1.5 GiB`, `512 B` (binary units, at most
/// one decimal, trailing `.0` dropped).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let tenths = (value * 10.0).round() / 10.0;
    if tenths.fract() == 0.0 {
        format!("{tenths:.0} {}", UNITS[unit])
    } else {
        format!("{tenths:.1} {}", UNITS[unit])
    }
}

/// Parses a duration into seconds: one or more `<number><unit>` parts with
/// units `s`, `m` (minutes), `h`, `d`, as in `90s`, `10m`, `2h`, `1h30m`.
/// A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<u64, QuantityError> {
    let bad = || QuantityError::BadDuration {
        text: text.to_string(),
    };
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() || t.len() > MAX_TEXT {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| bad())?;
        return check_duration(text, secs);
    }
    let mut total: u64 = 0;
    let mut rest = t.as_str();
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 || digits > 12 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = match rest.as_bytes()[0] {
            b's' => (1, 1),
            b'm' => (60, 1),
            b'h' => (3_600, 1),
            b'd' => (86_400, 1),
            _ => return Err(bad()),
        };
        rest = &rest[len..];
        total = total.saturating_add(n.saturating_mul(unit));
    }
    check_duration(text, total)
}

fn check_duration(text: &str, secs: u64) -> Result<u64, QuantityError> {
    if secs > MAX_DURATION_SECS {
        return Err(QuantityError::DurationTooLong {
            text: text.to_string(),
        });
    }
    Ok(secs)
}

/// A duration for people, in its two largest units: `45 s`, `10 min`,
/// `3 h`, `1 h 30 min`, `2 d 4 h`.
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "min"), (s, "s")]
        .into_iter()
        .skip_while(|&(v, _)| v == 0)
        .take(2)
        .filter(|&(v, _)| v != 0)
        .map(|(v, u)| format!("{v} {u}"))
        .collect();
    if parts.is_empty() {
        "0 s".to_string()
    } else {
        parts.join(" ")
    }
}

/// What a provider advertises. Persisted and sent in offers, so versioned;
/// deserializing runs [`Offer::validate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredOffer")]
pub struct Offer {
    /// Format version, [`OFFER_VERSION`].
    pub version: u16,
    /// Units it runs at once (one wasm instance per cpu). At least 1.
    pub cpus: u16,
    /// Memory for all running units together.
    pub memory_bytes: u64,
    /// When it takes work.
    pub schedule: Schedule,
    /// Runs work only while the machine is otherwise idle; the node reports
    /// whether it is idle now ([`crate::compute::matching::ProviderState`]).
    pub idle_only: bool,
    /// Measured wasm speed in fuel per second (0 if unknown), to turn a
    /// unit's fuel limit into a run time.
    pub fuel_per_sec: u64,
}

#[derive(Deserialize)]
struct StoredOffer {
    version: u16,
    cpus: u16,
    memory_bytes: u64,
    schedule: Schedule,
    idle_only: bool,
    fuel_per_sec: u64,
}

impl TryFrom<StoredOffer> for Offer {
    type Error = OfferError;

    fn try_from(s: StoredOffer) -> Result<Self, OfferError> {
        let offer = Offer {
            version: s.version,
            cpus: s.cpus,
            memory_bytes: s.memory_bytes,
            schedule: s.schedule,
            idle_only: s.idle_only,
            fuel_per_sec: s.fuel_per_sec,
        };
        offer.validate()?;
        Ok(offer)
    }
}

/// An offer is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// Zero or more than [`MAX_CPUS`] cpus.
    #[error("an offer needs 1 to {MAX_CPUS} cpus, not {0}")]
    Cpus(u16),
    /// No memory, or more than [`MAX_SIZE`].
    #[error("an offer needs some memory (at most 1 PiB), not {0} bytes")]
    Memory(u64),
    /// A format this build does not read.
    #[error("offer format version {0} is not supported (this build reads {OFFER_VERSION})")]
    Version(u16),
}

impl Offer {
    /// An offer of `cpus` and `memory_bytes` inside `schedule`.
    pub fn new(cpus: u16, memory_bytes: u64, schedule: Schedule) -> Result<Self, OfferError> {
        let offer = Self {
            version: OFFER_VERSION,
            cpus,
            memory_bytes,
            schedule,
            idle_only: false,
            fuel_per_sec: 0,
        };
        offer.validate()?;
        Ok(offer)
    }

    /// Checks the bounds (after deserializing an offer from the network).
    pub fn validate(&self) -> Result<(), OfferError> {
        if self.version != OFFER_VERSION {
            return Err(OfferError::Version(self.version));
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(OfferError::Cpus(self.cpus));
        }
        if self.memory_bytes == 0 || self.memory_bytes > MAX_SIZE {
            return Err(OfferError::Memory(self.memory_bytes));
        }
        Ok(())
    }

    /// How long one attempt of `need` is expected to take on this provider,
    /// in seconds: the unit's own estimate if it has one; else its fuel
    /// limit at this provider's speed, if both are known; else the whole
    /// per-attempt deadline (the most it may run). Never more than the
    /// deadline, since the attempt is stopped there.
    pub fn expected_secs(&self, need: &Need) -> u64 {
        let guess = if need.estimate_secs > 0 {
            need.estimate_secs
        } else if let (Some(fuel), true) = (need.fuel, self.fuel_per_sec > 0) {
            fuel.div_ceil(self.fuel_per_sec)
        } else {
            need.deadline_secs
        };
        guess.min(need.deadline_secs)
    }
}

/// What one unit needs from a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Need {
    /// Memory limit of the wasm instance (its store limit).
    pub memory_bytes: u64,
    /// Fuel limit, if the job sets one.
    pub fuel: Option<u64>,
    /// The submitter's estimate of one run, in seconds (0 if none).
    pub estimate_secs: u64,
    /// Wall-clock limit of one attempt, in seconds: the job's `deadline`.
    pub deadline_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4 gib"), Ok(4 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size(".5KiB"), Ok(512));
        assert!(matches!(
            parse_size("64Mb/s"),
            Err(QuantityError::SizeUnit { .. })
        ));
        assert!(matches!(
            parse_size("MiB"),
            Err(QuantityError::BadSize { .. })
        ));
        assert!(matches!(
            parse_size("1.2.3MiB"),
            Err(QuantityError::BadSize { .. })
        ));
        assert!(matches!(
            parse_size("-1MiB"),
            Err(QuantityError::SizeUnit { .. })
        ));
        assert!(matches!(
            parse_size("2048TiB"),
            Err(QuantityError::SizeTooLarge { .. })
        ));
        assert!(matches!(
            parse_size("99999999999999999999999GiB"),
            Err(QuantityError::SizeTooLarge { .. })
        ));
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(8 << 30), "8 GiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(100), "100 B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("2h"), Ok(7_200));
        assert_eq!(parse_duration("1h30m"), Ok(5_400));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(matches!(
            parse_duration("10 minutes"),
            Err(QuantityError::BadDuration { .. })
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(QuantityError::BadDuration { .. })
        ));
        assert!(matches!(parse_duration("10"), Ok(10)));
        assert!(matches!(
            parse_duration(""),
            Err(QuantityError::BadDuration { .. })
        ));
        assert!(matches!(
            parse_duration("400d"),
            Err(QuantityError::DurationTooLong { .. })
        ));
        assert!(
            parse_duration("10x")
                .unwrap_err()
                .to_string()
                .contains("10m")
        );
        assert_eq!(format_duration(3 * 3600), "3 h");
        assert_eq!(format_duration(5_400), "1 h 30 min");
        assert_eq!(format_duration(86_400 + 61), "1 d");
        assert_eq!(format_duration(0), "0 s");
    }

    #[test]
    fn expected_time() {
        let mut o = Offer::new(2, 4 << 30, Schedule::always()).unwrap();
        let mut need = Need {
            memory_bytes: 64 << 20,
            fuel: Some(1_000_000),
            estimate_secs: 0,
            deadline_secs: 600,
        };
        assert_eq!(o.expected_secs(&need), 600, "nothing known: the deadline");
        o.fuel_per_sec = 10_000;
        assert_eq!(o.expected_secs(&need), 100, "fuel at the provider's speed");
        need.estimate_secs = 30;
        assert_eq!(o.expected_secs(&need), 30, "the estimate wins");
        need.estimate_secs = 5_000;
        assert_eq!(o.expected_secs(&need), 600, "never past the deadline");
        assert_eq!(
            Offer::new(0, 1, Schedule::always()),
            Err(OfferError::Cpus(0))
        );
        assert_eq!(
            Offer::new(1, 0, Schedule::always()),
            Err(OfferError::Memory(0))
        );
        let bytes = postcard::to_allocvec(&o).unwrap();
        assert_eq!(postcard::from_bytes::<Offer>(&bytes).unwrap(), o);
        o.cpus = 0;
        let bytes = postcard::to_allocvec(&o).unwrap();
        assert!(postcard::from_bytes::<Offer>(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn sizes_round_trip_through_units(n in 0u64..(1 << 20), unit in 0usize..5) {
            let names = ["B", "KiB", "MiB", "GiB", "TiB"];
            let v = n << (10 * unit as u32);
            prop_assume!(v <= MAX_SIZE);
            prop_assert_eq!(parse_size(&format!("{n}{}", names[unit])), Ok(v));
        }

        #[test]
        fn durations_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000) {
            prop_assert_eq!(parse_duration(&format!("{h}h{m}m{s}s")), Ok(h * 3600 + m * 60 + s));
        }

        #[test]
        fn parsers_never_panic(text in ".{0,80}") {
            let _ = parse_size(&text);
            let _ = parse_duration(&text);
        }
    }
}
