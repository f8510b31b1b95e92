//! Availability schedules: when a provider offers compute.
//!
//! This module owns the schedule syntax, its canonical text form and the
//! three questions the scheduler asks: is the provider open at `t`
//! ([`Schedule::is_open`]), when does it next open ([`Schedule::next_open`]),
//! and when does the window it is in close ([`Schedule::open_until`]).
//!
//! # Syntax
//!
//! ```text
//! schedule := clause ( ";" clause )*
//! clause   := days times | "always" | offset
//! days     := "daily" | "every day" | day-item ( "," day-item )*
//! day-item := day | day "-" day | "weekdays" | "weekends"
//!             (days are mon..sun, full names too; a range may wrap: fri-mon)
//! times    := "all-day" | range ( "," range )*
//! range    := HH:MM "-" HH:MM            (00:00..23:59, the end may be 24:00)
//! offset   := "utc" | "utc+HH:MM" | "utc-HH:MM" | "utc+H"
//! ```
//!
//! Example: `mon-fri 19:00-07:00; sat,sun all-day`. A range that ends at or
//! before its start wraps midnight and belongs to the day it starts on, so
//! `fri 19:00-07:00` is open from Friday 19:00 to Saturday 07:00 (and
//! `sun 23:00-01:00` runs into Monday of the next week). A range with the
//! same start and end is refused: write `all-day`. Words are
//! case-insensitive.
//!
//! # Time zone
//!
//! Times are UTC unless the schedule has an offset clause, and the offset is
//! fixed: the core has no time-zone database and no clock, and two
//! schedulers must read one schedule the same way wherever they run. A node
//! that wants its owner's local time writes its current offset
//! (`utc+02:00`) when it starts; a daylight-saving change shifts the windows
//! by an hour until the node restarts.
//!
//! # Invariants
//!
//! - A parsed schedule is open for at least one minute a week, so
//!   [`Schedule::next_open`] always answers for it.
//! - The open intervals are kept merged and sorted in seconds of the local
//!   week (Monday 00:00 = 0), so `is_open`, `next_open` and `open_until`
//!   agree with each other by construction (property-tested), and windows
//!   that touch (`mon 00:00-24:00; tue 00:00-12:00`) are one window.
//! - `parse(display(s)) == s` (property-tested); the text form is canonical.
//! - Input is bounded: [`MAX_SCHEDULE_LEN`] bytes, [`MAX_CLAUSES`] clauses,
//!   [`MAX_RANGES`] time ranges per clause.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest schedule text accepted, in bytes.
pub const MAX_SCHEDULE_LEN: usize = 1024;
/// Most `;`-separated clauses in one schedule.
pub const MAX_CLAUSES: usize = 32;
/// Most time ranges in one clause.
pub const MAX_RANGES: usize = 16;
/// Largest offset from UTC accepted, in minutes (±14:00, as real zones).
pub const MAX_OFFSET_MINUTES: i16 = 14 * 60;

const DAY: u64 = 86_400;
const WEEK: u64 = 7 * DAY;
const MINUTES_PER_DAY: u16 = 24 * 60;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A schedule could not be parsed. Each variant names the clause (1-based)
/// and the text that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// Nothing but whitespace and separators.
    #[error("the schedule is empty: write e.g. \"mon-fri 19:00-07:00; sat,sun all-day\"")]
    Empty,
    /// Longer than [`MAX_SCHEDULE_LEN`].
    #[error("the schedule is {len} bytes long; at most {MAX_SCHEDULE_LEN} are accepted")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// More than [`MAX_CLAUSES`] clauses.
    #[error("the schedule has {count} clauses; at most {MAX_CLAUSES} are accepted")]
    TooManyClauses {
        /// How many.
        count: usize,
    },
    /// More than [`MAX_RANGES`] time ranges in one clause.
    #[error("clause {clause} has {count} time ranges; at most {MAX_RANGES} are accepted")]
    TooManyRanges {
        /// Which clause.
        clause: usize,
        /// How many.
        count: usize,
    },
    /// A day name that is not `mon`..`sun` (or `daily`, `every day`).
    #[error(
        "clause {clause}: {word:?} is not a day (use mon, tue, wed, thu, fri, sat, sun, ranges like mon-fri, or daily)"
    )]
    BadDay {
        /// Which clause.
        clause: usize,
        /// The word.
        word: String,
    },
    /// The days are not followed by times.
    #[error("clause {clause}: {text:?} has days but no times (add e.g. 09:00-17:00 or all-day)")]
    MissingTimes {
        /// Which clause.
        clause: usize,
        /// The clause.
        text: String,
    },
    /// A time range that is not `HH:MM-HH:MM`.
    #[error("clause {clause}: {text:?} is not a time range like 19:00-07:00 or all-day")]
    BadRange {
        /// Which clause.
        clause: usize,
        /// The range.
        text: String,
    },
    /// A time that is not `HH:MM` in 00:00..24:00.
    #[error("clause {clause}: {text:?} is not a time of day (HH:MM, 00:00 to 24:00)")]
    BadTime {
        /// Which clause.
        clause: usize,
        /// The time.
        text: String,
    },
    /// A range whose start equals its end.
    #[error(
        "clause {clause}: {text:?} starts and ends at the same time; write all-day for a whole day"
    )]
    EmptyRange {
        /// Which clause.
        clause: usize,
        /// The range.
        text: String,
    },
    /// An offset clause that is not `utc±HH:MM` within ±14:00.
    #[error("clause {clause}: {text:?} is not a UTC offset like utc+02:00 (at most ±14:00)")]
    BadOffset {
        /// Which clause.
        clause: usize,
        /// The offset text.
        text: String,
    },
    /// Two offset clauses.
    #[error("clause {clause}: a second UTC offset; give one at most")]
    DuplicateOffset {
        /// Which clause.
        clause: usize,
    },
}

/// The days a clause covers, bit `d` for day `d` (Monday = 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Days(u8);

impl Days {
    const ALL: Days = Days(0x7f);

    fn contains(self, day: usize) -> bool {
        self.0 & (1 << day) != 0
    }
}

/// The times of day a clause covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Times {
    AllDay,
    /// `(start, end)` minutes of the day; `end <= start` wraps midnight;
    /// `end` may be 1440 (24:00).
    Ranges(Vec<(u16, u16)>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Clause {
    days: Days,
    times: Times,
}

/// A weekly availability schedule. Build one with [`Schedule::parse`];
/// serialized as its text form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Schedule {
    clauses: Vec<Clause>,
    /// Local time = UTC + this many minutes.
    offset_minutes: i16,
    /// Open intervals `[start, end)` in seconds of the local week, sorted,
    /// merged, non-empty.
    intervals: Vec<(u64, u64)>,
}

impl Schedule {
    /// Open all the time.
    pub fn always() -> Self {
        Self::build(
            vec![Clause {
                days: Days::ALL,
                times: Times::AllDay,
            }],
            0,
        )
    }

    /// Parses the text form (see the module docs).
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        if text.len() > MAX_SCHEDULE_LEN {
            return Err(ScheduleError::TooLong { len: text.len() });
        }
        let raw: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if raw.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if raw.len() > MAX_CLAUSES {
            return Err(ScheduleError::TooManyClauses { count: raw.len() });
        }
        let mut clauses = Vec::new();
        let mut offset = None;
        for (i, text) in raw.iter().enumerate() {
            let n = i + 1;
            let lower = text.to_ascii_lowercase();
            if lower.starts_with("utc") {
                if offset.is_some() {
                    return Err(ScheduleError::DuplicateOffset { clause: n });
                }
                offset = Some(parse_offset(n, &lower)?);
                continue;
            }
            if lower == "always" {
                clauses.push(Clause {
                    days: Days::ALL,
                    times: Times::AllDay,
                });
                continue;
            }
            clauses.push(parse_clause(n, &lower)?);
        }
        if clauses.is_empty() {
            // Only an offset: nothing is ever open.
            return Err(ScheduleError::Empty);
        }
        Ok(Self::build(clauses, offset.unwrap_or(0)))
    }

    fn build(clauses: Vec<Clause>, offset_minutes: i16) -> Self {
        let mut raw = Vec::new();
        for c in &clauses {
            for day in (0..7).filter(|&d| c.days.contains(d)) {
                let base = day as u64 * DAY;
                let spans: Vec<(u64, u64)> = match &c.times {
                    Times::AllDay => vec![(0, DAY)],
                    Times::Ranges(r) => r
                        .iter()
                        .map(|&(s, e)| {
                            let (s, e) = (u64::from(s) * 60, u64::from(e) * 60);
                            // A range ending at or before its start runs
                            // into the next day.
                            if e <= s { (s, e + DAY) } else { (s, e) }
                        })
                        .collect(),
                };
                for (s, e) in spans {
                    let (s, e) = (base + s, base + e);
                    if e > WEEK {
                        // Sunday night into Monday: wrap to the week's start.
                        raw.push((s, WEEK));
                        raw.push((0, e - WEEK));
                    } else {
                        raw.push((s, e));
                    }
                }
            }
        }
        raw.sort_unstable();
        let mut intervals: Vec<(u64, u64)> = Vec::with_capacity(raw.len());
        for (s, e) in raw {
            match intervals.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => intervals.push((s, e)),
            }
        }
        Self {
            clauses,
            offset_minutes,
            intervals,
        }
    }

    /// The fixed offset from UTC, in minutes.
    pub fn offset_minutes(&self) -> i16 {
        self.offset_minutes
    }

    /// Whether the schedule is open all week.
    pub fn is_always(&self) -> bool {
        self.intervals == [(0, WEEK)]
    }

    /// Seconds into the local week (Monday 00:00 = 0) at unix time `t`.
    fn week_second(&self, t: u64) -> u64 {
        // 1970-01-01 was a Thursday, day 3 of a Monday-based week.
        let local = i128::from(t) + i128::from(self.offset_minutes) * 60 + 3 * i128::from(DAY);
        local.rem_euclid(i128::from(WEEK)) as u64
    }

    /// The merged interval containing week second `s`, if any.
    fn containing(&self, s: u64) -> Option<usize> {
        let i = self.intervals.partition_point(|&(start, _)| start <= s);
        (i > 0 && s < self.intervals[i - 1].1).then(|| i - 1)
    }

    /// Whether the provider is open at unix time `t`.
    pub fn is_open(&self, t: u64) -> bool {
        self.containing(self.week_second(t)).is_some()
    }

    /// The first time at or after `t` when the schedule is open: `t` itself
    /// when open now. `None` only for a schedule that is never open, which
    /// [`Schedule::parse`] does not produce.
    pub fn next_open(&self, t: u64) -> Option<u64> {
        let s = self.week_second(t);
        if self.containing(s).is_some() {
            return Some(t);
        }
        let first = self.intervals.first()?;
        let delta = match self.intervals.iter().find(|&&(start, _)| start > s) {
            Some(&(start, _)) => start - s,
            None => first.0 + WEEK - s,
        };
        t.checked_add(delta)
    }

    /// When the window open at `t` closes (the first closed second), or
    /// `None` when the schedule is closed at `t`. A schedule open all week
    /// never closes: `Some(u64::MAX)`, so "does the run fit before the
    /// window closes" is one comparison for every schedule.
    pub fn open_until(&self, t: u64) -> Option<u64> {
        let s = self.week_second(t);
        let i = self.containing(s)?;
        if self.is_always() {
            return Some(u64::MAX);
        }
        let mut end = self.intervals[i].1;
        // A window that runs to the end of the week continues into the
        // interval that starts the next week, if there is one at 0.
        if end == WEEK && self.intervals[0].0 == 0 && i != 0 {
            end = WEEK + self.intervals[0].1;
        }
        Some(t.saturating_add(end - s))
    }
}

fn parse_clause(n: usize, text: &str) -> Result<Clause, ScheduleError> {
    let (days, rest) = if let Some(rest) = text.strip_prefix("every day") {
        (Days::ALL, rest)
    } else {
        let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        (parse_days(n, word)?, rest)
    };
    // Times may be written with spaces after the commas.
    let times: String = rest.split_whitespace().collect();
    if times.is_empty() {
        return Err(ScheduleError::MissingTimes {
            clause: n,
            text: text.to_string(),
        });
    }
    if times == "all-day" {
        return Ok(Clause {
            days,
            times: Times::AllDay,
        });
    }
    let parts: Vec<&str> = times.split(',').collect();
    if parts.len() > MAX_RANGES {
        return Err(ScheduleError::TooManyRanges {
            clause: n,
            count: parts.len(),
        });
    }
    let mut ranges = Vec::with_capacity(parts.len());
    for part in parts {
        let bad = || ScheduleError::BadRange {
            clause: n,
            text: part.to_string(),
        };
        let (a, b) = part.split_once('-').ok_or_else(bad)?;
        let start = parse_time(n, a)?;
        let end = parse_time(n, b)?;
        if start == MINUTES_PER_DAY {
            return Err(ScheduleError::BadTime {
                clause: n,
                text: a.to_string(),
            });
        }
        if start == end {
            return Err(ScheduleError::EmptyRange {
                clause: n,
                text: part.to_string(),
            });
        }
        ranges.push((start, end));
    }
    Ok(Clause {
        days,
        times: Times::Ranges(ranges),
    })
}

fn parse_days(n: usize, word: &str) -> Result<Days, ScheduleError> {
    if word == "daily" {
        return Ok(Days::ALL);
    }
    let mut bits = 0u8;
    for item in word.split(',') {
        let day = |w: &str| {
            DAY_NAMES
                .iter()
                .position(|&d| d == w)
                .or_else(|| FULL_DAY_NAMES.iter().position(|&d| d == w))
                .ok_or_else(|| ScheduleError::BadDay {
                    clause: n,
                    word: w.to_string(),
                })
        };
        match item {
            "weekdays" => {
                bits |= 0x1f;
                continue;
            }
            "weekends" => {
                bits |= 0x60;
                continue;
            }
            _ => {}
        }
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                // A range may wrap the week: fri-mon.
                let mut d = a;
                loop {
                    bits |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => bits |= 1 << day(item)?,
        }
    }
    Ok(Days(bits))
}

fn parse_time(n: usize, text: &str) -> Result<u16, ScheduleError> {
    let bad = || ScheduleError::BadTime {
        clause: n,
        text: text.to_string(),
    };
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let digits = |s: &str, max_len| {
        !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_offset(n: usize, text: &str) -> Result<i16, ScheduleError> {
    let bad = || ScheduleError::BadOffset {
        clause: n,
        text: text.to_string(),
    };
    let rest = text.strip_prefix("utc").ok_or_else(bad)?.trim();
    if rest.is_empty() {
        return Ok(0);
    }
    let (sign, rest) = match rest.as_bytes()[0] {
        b'+' => (1i16, &rest[1..]),
        b'-' => (-1i16, &rest[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "00"));
    let ok = |s: &str| (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(h) || !ok(m) || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i16, i16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let minutes = h * 60 + m;
    if m >= 60 || minutes > MAX_OFFSET_MINUTES {
        return Err(bad());
    }
    Ok(sign * minutes)
}

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Days::ALL {
            return f.write_str("daily");
        }
        // Runs of three or more days as ranges (mon-fri), shorter runs as
        // lists (sat,sun); no run wraps the week, so the form is canonical.
        let mut items = Vec::new();
        let mut d = 0;
        while d < 7 {
            if !self.contains(d) {
                d += 1;
                continue;
            }
            let start = d;
            while d + 1 < 7 && self.contains(d + 1) {
                d += 1;
            }
            if d - start >= 2 {
                items.push(format!("{}-{}", DAY_NAMES[start], DAY_NAMES[d]));
            } else {
                items.extend((start..=d).map(|x| DAY_NAMES[x].to_string()));
            }
            d += 1;
        }
        f.write_str(&items.join(","))
    }
}

fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .clauses
            .iter()
            .map(|c| {
                let times = match &c.times {
                    Times::AllDay => "all-day".to_string(),
                    Times::Ranges(r) => r
                        .iter()
                        .map(|&(s, e)| format!("{}-{}", hhmm(s), hhmm(e)))
                        .collect::<Vec<_>>()
                        .join(","),
                };
                format!("{} {times}", c.days)
            })
            .collect();
        if self.offset_minutes != 0 {
            let sign = if self.offset_minutes < 0 { '-' } else { '+' };
            parts.push(format!(
                "utc{sign}{}",
                hhmm(self.offset_minutes.unsigned_abs())
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

impl std::str::FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Schedule {
    type Error = ScheduleError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Schedule> for String {
    fn from(s: Schedule) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Monday 2024-01-01 00:00 UTC.
    const MONDAY: u64 = 1_704_067_200;
    const H: u64 = 3600;

    fn at(day: u64, hour: u64, minute: u64) -> u64 {
        MONDAY + day * DAY + hour * H + minute * 60
    }

    #[test]
    fn the_issue_example() {
        let s = Schedule::parse("mon-fri 19:00-07:00; sat,sun all-day").unwrap();
        assert!(!s.is_open(at(0, 12, 0)), "monday noon");
        assert!(s.is_open(at(0, 19, 0)), "monday 19:00");
        assert!(s.is_open(at(1, 6, 59)), "tuesday 06:59 (monday's window)");
        assert!(!s.is_open(at(1, 7, 0)), "tuesday 07:00");
        assert_eq!(s.open_until(at(0, 20, 0)), Some(at(1, 7, 0)));
        assert_eq!(s.next_open(at(0, 12, 0)), Some(at(0, 19, 0)));
        // Friday 19:00 runs into Saturday and Sunday all day, then Monday
        // morning is closed: one window from Friday 19:00 to Monday 00:00.
        assert_eq!(s.open_until(at(4, 22, 0)), Some(at(7, 0, 0)));
        assert!(!s.is_open(at(7, 3, 0)), "sunday has no night range");
        assert_eq!(s.to_string(), "mon-fri 19:00-07:00; sat,sun all-day");
    }

    #[test]
    fn day_aliases() {
        let a = Schedule::parse("weekdays 19:00-07:00; weekends all-day").unwrap();
        let b = Schedule::parse("Monday-Friday 19:00-07:00; saturday,sun all-day").unwrap();
        let c = Schedule::parse("mon-fri 19:00-07:00; sat,sun all-day").unwrap();
        assert_eq!(a, c);
        assert_eq!(b, c);
        let wrap = Schedule::parse("fri-mon 10:00-11:00").unwrap();
        assert_eq!(wrap.to_string(), "mon,fri-sun 10:00-11:00");
    }

    #[test]
    fn sunday_night_wraps_to_monday() {
        let s = Schedule::parse("sun 23:00-01:00").unwrap();
        assert!(s.is_open(at(6, 23, 30)));
        assert!(s.is_open(at(7, 0, 30)));
        assert!(s.is_open(at(0, 0, 30)), "the previous sunday's window");
        assert!(!s.is_open(at(0, 1, 0)));
        assert_eq!(s.open_until(at(6, 23, 30)), Some(at(7, 1, 0)));
        assert_eq!(s.next_open(at(0, 2, 0)), Some(at(6, 23, 0)));
    }

    #[test]
    fn offsets_shift_local_time() {
        let s = Schedule::parse("daily 09:00-17:00; utc+02:00").unwrap();
        assert!(s.is_open(at(0, 7, 0)), "09:00 local is 07:00 UTC");
        assert!(!s.is_open(at(0, 15, 0)));
        assert_eq!(s.to_string(), "daily 09:00-17:00; utc+02:00");
        let w = Schedule::parse("Every Day 09:00-17:00; UTC-5").unwrap();
        assert!(w.is_open(at(0, 14, 0)));
        assert_eq!(w.offset_minutes(), -300);
        assert_eq!(Schedule::parse(&w.to_string()).unwrap(), w);
    }

    #[test]
    fn always_never_closes() {
        for s in [
            "always",
            "daily all-day",
            "mon-sun 00:00-24:00",
            "fri-thu all-day",
        ] {
            let s = Schedule::parse(s).unwrap();
            assert!(s.is_always());
            assert_eq!(s.open_until(12345), Some(u64::MAX));
            assert_eq!(s.next_open(12345), Some(12345));
        }
    }

    #[test]
    fn errors_point_at_the_bad_part() {
        fn e(s: &str) -> ScheduleError {
            Schedule::parse(s).unwrap_err()
        }
        assert_eq!(e("  ; "), ScheduleError::Empty);
        assert_eq!(
            e("mon-fri 19:00-07:00; sa all-day"),
            ScheduleError::BadDay {
                clause: 2,
                word: "sa".into()
            }
        );
        assert_eq!(
            e("mon 25:00-26:00"),
            ScheduleError::BadTime {
                clause: 1,
                text: "25:00".into()
            }
        );
        assert_eq!(
            e("mon 9-17"),
            ScheduleError::BadTime {
                clause: 1,
                text: "9".into()
            }
        );
        assert_eq!(
            e("mon 09:00"),
            ScheduleError::BadRange {
                clause: 1,
                text: "09:00".into()
            }
        );
        assert_eq!(
            e("mon 10:00-10:00"),
            ScheduleError::EmptyRange {
                clause: 1,
                text: "10:00-10:00".into()
            }
        );
        assert!(matches!(
            e("mon"),
            ScheduleError::MissingTimes { clause: 1, .. }
        ));
        assert!(matches!(
            e("mon all-day; utc+15"),
            ScheduleError::BadOffset { clause: 2, .. }
        ));
        assert!(matches!(
            e("utc+1; mon all-day; utc"),
            ScheduleError::DuplicateOffset { clause: 3 }
        ));
        assert_eq!(e("utc+1"), ScheduleError::Empty);
        assert!(matches!(
            e(&"mon all-day;".repeat(40)),
            ScheduleError::TooManyClauses { .. }
        ));
        assert!(matches!(
            e(&"x".repeat(2000)),
            ScheduleError::TooLong { .. }
        ));
        // Messages read as sentences.
        assert!(e("sa all-day").to_string().contains("\"sa\" is not a day"));
    }

    #[test]
    fn serde_uses_the_text_form() {
        let s = Schedule::parse("mon,wed,fri 08:00-12:00,13:00-17:00").unwrap();
        let bytes = postcard::to_allocvec(&s).unwrap();
        let back: Schedule = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, s);
        let bad = postcard::to_allocvec(&"mon 99:00-01:00".to_string()).unwrap();
        assert!(postcard::from_bytes::<Schedule>(&bad).is_err());
    }

    fn day_word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("daily".to_string()),
            Just("every day".to_string()),
            prop::collection::vec((0usize..7, 0usize..7, any::<bool>()), 1..4).prop_map(|items| {
                items
                    .into_iter()
                    .map(|(a, b, range)| {
                        if range {
                            format!("{}-{}", DAY_NAMES[a], DAY_NAMES[b])
                        } else {
                            DAY_NAMES[a].to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        ]
    }

    fn times() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => Just("all-day".to_string()),
            4 => prop::collection::vec((0u16..1440, 1u16..=1440), 1..4).prop_map(|r| {
                r.into_iter()
                    .map(|(s, e)| {
                        let e = if e == s { (e + 1) % 1440 } else { e };
                        let e = if e == 0 { 1440 } else { e };
                        format!("{}-{}", hhmm(s), hhmm(e))
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        ]
    }

    fn schedule_text() -> impl Strategy<Value = String> {
        (
            prop::collection::vec((day_word(), times()), 1..5),
            prop::option::of(-840i16..=840),
        )
            .prop_map(|(clauses, offset)| {
                let mut parts: Vec<String> = clauses
                    .into_iter()
                    .map(|(d, t)| format!("{d} {t}"))
                    .collect();
                if let Some(o) = offset {
                    let sign = if o < 0 { '-' } else { '+' };
                    parts.push(format!("utc{sign}{}", hhmm(o.unsigned_abs())));
                }
                parts.join("; ")
            })
    }

    proptest! {
        #[test]
        fn parse_display_round_trips(text in schedule_text()) {
            let s = Schedule::parse(&text).unwrap();
            let shown = s.to_string();
            let back = Schedule::parse(&shown).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(back.to_string(), shown);
        }

        #[test]
        fn queries_agree(text in schedule_text(), t in 0u64..4_000_000_000) {
            let s = Schedule::parse(&text).unwrap();
            let open = s.is_open(t);
            let next = s.next_open(t).unwrap();
            prop_assert!(next >= t);
            prop_assert!(s.is_open(next));
            match s.open_until(t) {
                None => {
                    prop_assert!(!open);
                    prop_assert!(next > t);
                    prop_assert!(next - t <= WEEK);
                    // Closed right up to the moment it opens.
                    prop_assert!(!s.is_open(next - 1));
                    let mid = t + (next - t) / 2;
                    prop_assert!(!s.is_open(mid));
                }
                Some(end) => {
                    prop_assert!(open);
                    prop_assert_eq!(next, t);
                    prop_assert!(end > t);
                    if end != u64::MAX {
                        prop_assert!(end - t <= WEEK);
                        prop_assert!(s.is_open(end - 1));
                        prop_assert!(!s.is_open(end));
                        prop_assert!(s.is_open(t + (end - t) / 2));
                    } else {
                        prop_assert!(s.is_always());
                    }
                }
            }
        }
    }
}
