//! Policy strings that may hold policy variables (`${aws:username}`):
//! `Resource` and `NotResource` patterns and the values of string (and
//! ARN) conditions. This module owns their syntax, their substitution
//! from a request's [`Context`], and the wildcard matching in which
//! substituted text stands for itself.
//!
//! The syntax is IAM's, and holds only in policies of `"Version":
//! "2012-10-17"` (in `2008-10-17` ones `${` is plain text, as in IAM):
//! - `${key}`: the request's value of condition key `key` (any case;
//!   only keys the gateway knows, [`super::known_key`]);
//! - `${key, 'default'}`: the same, or `default` when the request lacks
//!   the key (`''` is a quote inside a default; spaces around the key and
//!   the quotes are ignored);
//! - `${*}`, `${?}`, `${$}`: a literal `*`, `?` or `$`.
//!
//! Substitution is one pass: a value that itself reads `${…}` or `*` is
//! just those characters, so a user named `a*` is no wildcard. A key the
//! request lacks (or holds several values of), with no default, leaves
//! the string with no value at all, IAM's "null": it equals and matches
//! nothing.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::Context;
use crate::error::GatewayError;

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Piece {
    /// Policy text as written: in a pattern its `*` and `?` are wildcards.
    Text(String),
    /// Characters that stand for themselves even in a pattern (`${*}`,
    /// `${?}`, `${$}`).
    Literal(String),
    /// `${key}` or `${key, 'default'}`; `key` in lower case.
    Var {
        /// The condition key.
        key: String,
        /// What stands in when the request lacks the key.
        default: Option<String>,
    },
}

/// A policy string, as parsed: text, literals and variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template(Vec<Piece>);

/// One element of a wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// This character.
    Char(char),
    /// `*`: any run of characters.
    Any,
    /// `?`: one character.
    One,
}

impl Template {
    /// `s` as plain text, with no variables: a string of a `2008-10-17`
    /// policy, a value of a non-string condition, or a policy kept before
    /// the gateway read variables.
    pub fn text(s: impl Into<String>) -> Self {
        let s = s.into();
        Template(if s.is_empty() {
            vec![]
        } else {
            vec![Piece::Text(s)]
        })
    }

    /// Parses `s` with its `${…}` variables; a malformed or unknown one is
    /// `MalformedPolicy`.
    pub fn parse(s: &str) -> Result<Self, GatewayError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("${") {
            text.push_str(&rest[..at]);
            let (piece, after) = variable(&rest[at + 2..]).map_err(|why| {
                GatewayError::MalformedPolicy(format!("policy variable in {s:?}: {why}"))
            })?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
            rest = after;
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template(pieces))
    }

    /// Whether a variable of this string names a key starting with
    /// `prefix` (lower case).
    pub fn mentions_prefix(&self, prefix: &str) -> bool {
        self.0
            .iter()
            .any(|p| matches!(p, Piece::Var { key, .. } if key.starts_with(prefix)))
    }

    /// The string in the request `cx` (`None`: a variable with no value).
    pub fn string(&self, cx: &Context) -> Option<Cow<'_, str>> {
        match self.0.as_slice() {
            [] => Some(Cow::Borrowed("")),
            [Piece::Text(t) | Piece::Literal(t)] => Some(Cow::Borrowed(t)),
            pieces => {
                let mut out = String::new();
                for p in pieces {
                    out.push_str(value(p, cx)?);
                }
                Some(Cow::Owned(out))
            }
        }
    }

    /// The wildcard pattern in the request `cx`: the policy text's `*` and
    /// `?` are wildcards, literals and substituted values are not (`None`:
    /// a variable with no value, which matches nothing).
    pub fn pattern(&self, cx: &Context) -> Option<Vec<Tok>> {
        let mut out = Vec::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.extend(wild(t)),
                p => out.extend(value(p, cx)?.chars().map(Tok::Char)),
            }
        }
        Some(out)
    }

    /// The characters before the first variable, and whether there is one
    /// (what a resource names whatever the request).
    pub fn fixed_prefix(&self) -> (String, bool) {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) | Piece::Literal(t) => out.push_str(t),
                Piece::Var { .. } => return (out, true),
            }
        }
        (out, false)
    }
}

/// A piece's value in `cx` (`None`: a variable with no value).
fn value<'a>(p: &'a Piece, cx: &'a Context) -> Option<&'a str> {
    match p {
        Piece::Text(t) | Piece::Literal(t) => Some(t),
        Piece::Var { key, default } => cx.variable(key).or(default.as_deref()),
    }
}

/// One variable, from just after its `${`: the piece and what follows
/// its `}`; or why it is malformed.
fn variable(s: &str) -> Result<(Piece, &str), String> {
    let body = s.trim_start_matches(' ');
    let end = body
        .find(['}', ',', ' '])
        .ok_or("\"${\" without a closing \"}\"")?;
    let name = &body[..end];
    if name.is_empty() {
        return Err("a variable names a condition key (\"${}\" is empty)".into());
    }
    let mut rest = body[end..].trim_start_matches(' ');
    let default = match rest.strip_prefix(',') {
        Some(r) => {
            let r = r
                .trim_start_matches(' ')
                .strip_prefix('\'')
                .ok_or("a default value is written in single quotes: ${key, 'default'}")?;
            let (default, after) = quoted(r).ok_or("a default value has no closing quote")?;
            rest = after.trim_start_matches(' ');
            Some(default)
        }
        None => None,
    };
    let rest = rest
        .strip_prefix('}')
        .ok_or("\"${\" without a closing \"}\"")?;
    let piece = match name {
        "*" | "?" | "$" if default.is_none() => Piece::Literal(name.to_string()),
        _ => {
            let key = name.to_ascii_lowercase();
            if !super::known_key(&key) {
                return Err(format!("{name:?} is not a condition key"));
            }
            Piece::Var { key, default }
        }
    };
    Ok((piece, rest))
}

/// A single-quoted string from just after its opening quote (`''` is one
/// quote): its text and what follows the closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            out.push(c);
        } else if chars.next_if(|&(_, c)| c == '\'').is_some() {
            out.push('\'');
        } else {
            return Some((out, &s[i + 1..]));
        }
    }
    None
}

/// Policy text as a pattern: `*` and `?` are wildcards.
pub fn wild(s: &str) -> impl Iterator<Item = Tok> + '_ {
    s.chars().map(|c| match c {
        '*' => Tok::Any,
        '?' => Tok::One,
        c => Tok::Char(c),
    })
}

/// Whether `s` fits `pattern`.
pub fn glob(pattern: &[Tok], s: &str, ignore_case: bool) -> bool {
    let fold = |c: char| {
        if ignore_case {
            c.to_ascii_lowercase()
        } else {
            c
        }
    };
    let s: Vec<char> = s.chars().map(fold).collect();
    let p = pattern;
    let is = |t: Tok, c: char| match t {
        Tok::Char(x) => fold(x) == c,
        Tok::One => true,
        Tok::Any => false,
    };
    // Iterative matching with one backtrack point: linear in practice.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < s.len() {
        if i < p.len() && is(p[i], s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == Tok::Any {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(st) = star {
            i = st + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|t| *t == Tok::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(pairs: &[(&str, &str)]) -> Context {
        let mut c = Context::new();
        for (k, v) in pairs {
            c.set(k, *v);
        }
        c
    }

    fn matches(template: &str, cx: &Context, s: &str) -> bool {
        Template::parse(template)
            .unwrap()
            .pattern(cx)
            .is_some_and(|p| glob(&p, s, false))
    }

    #[test]
    fn variables_are_filled_in_from_the_request() {
        let ann = cx(&[("aws:username", "ann")]);
        let t = Template::parse("home/${aws:username}/*").unwrap();
        assert_eq!(t.string(&ann).unwrap(), "home/ann/*");
        assert!(matches("home/${aws:username}/*", &ann, "home/ann/notes"));
        assert!(!matches("home/${aws:username}/*", &ann, "home/bob/notes"));
        // Key names are case-insensitive, and spaces inside are ignored.
        assert!(matches("home/${ AWS:UserName }/*", &ann, "home/ann/x"));
        // A key the request lacks leaves no value: nothing matches.
        assert_eq!(t.string(&cx(&[])), None);
        assert!(!matches("home/${aws:username}/*", &cx(&[]), "home/"));
        assert!(!matches("home/${aws:username}/*", &cx(&[]), "home//x"));
        // ... unless there is a default, which is case-sensitive text.
        let d = "home/${aws:username, 'Nobody''s'}/*";
        assert!(matches(d, &cx(&[]), "home/Nobody's/x"));
        assert!(matches(d, &ann, "home/ann/x"));
        assert!(!matches(d, &ann, "home/Nobody's/x"));
    }

    #[test]
    fn substituted_text_is_never_a_wildcard() {
        let star = cx(&[("aws:username", "*")]);
        assert!(matches("home/${aws:username}/x", &star, "home/*/x"));
        assert!(
            !matches("home/${aws:username}/x", &star, "home/ann/x"),
            "a user named * is not a wildcard"
        );
        let q = cx(&[("aws:username", "a?")]);
        assert!(!matches("${aws:username}", &q, "ab"));
        assert!(matches("${aws:username}", &q, "a?"));
        // Nor is a default, nor the special characters.
        assert!(!matches("${aws:username, '*'}", &cx(&[]), "ann"));
        assert!(matches("a${*}b${?}${$}", &cx(&[]), "a*b?$"));
        assert!(!matches("a${*}b", &cx(&[]), "aXb"));
        // The policy's own wildcards still are.
        assert!(matches("*/${aws:username}?", &star, "x/y/*!"));
        // One pass: a value that reads like a variable is just text.
        let v = cx(&[("aws:username", "${aws:referer}"), ("aws:referer", "r")]);
        assert_eq!(
            Template::parse("${aws:username}")
                .unwrap()
                .string(&v)
                .unwrap(),
            "${aws:referer}"
        );
    }

    #[test]
    fn malformed_variables_are_refused() {
        for bad in [
            "home/${aws:username",
            "home/${}",
            "home/${ }",
            "${aws:usrname}",
            "${aws:username, anonymous}",
            "${aws:username, 'open}",
            "${aws:username, 'a' 'b'}",
            "${aws:user name}",
            "${*, 'x'}",
        ] {
            assert!(
                matches!(Template::parse(bad), Err(GatewayError::MalformedPolicy(_))),
                "{bad}"
            );
        }
        // `$` alone and `}` are text.
        assert_eq!(
            Template::parse("a$b}").unwrap(),
            Template::text("a$b}".to_string())
        );
        assert_eq!(
            Template::parse("arn:aws:s3:::b/${aws:username}/x")
                .unwrap()
                .fixed_prefix(),
            ("arn:aws:s3:::b/".to_string(), true)
        );
    }
}
