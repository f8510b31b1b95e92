//! One page of an S3 listing over a sorted key list, as a pure function.
//!
//! The entries of a listing are the keys under `prefix`, each replaced by
//! its common prefix (the key up to and including the first `delimiter`
//! after `prefix`) when it has one, without duplicates, in key order. A
//! page holds the entries that sort strictly after `after` (S3's
//! `start-after`, `marker` or the decoded continuation token), at most
//! `max_keys` of them. When more remain, the page is truncated and its
//! last entry is the marker to continue from; since a common prefix sorts
//! before every key it covers, continuing after it skips them all.

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListParams<'a> {
    /// Only keys that start with this.
    pub prefix: &'a str,
    /// Group keys by the text up to this after the prefix (`None` or empty: no grouping).
    pub delimiter: Option<&'a str>,
    /// Only entries that sort after this.
    pub after: Option<&'a str>,
    /// At most this many entries (objects plus common prefixes).
    pub max_keys: usize,
}

/// One page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Indices into the key list of the objects on this page.
    pub objects: Vec<usize>,
    /// Common prefixes on this page.
    pub prefixes: Vec<String>,
    /// Whether entries remain after this page.
    pub truncated: bool,
    /// The last entry of a truncated page: where the next page starts.
    pub next_marker: Option<String>,
}

/// The common prefix of `key` (which starts with `prefix`), if any.
fn common_prefix<'k>(key: &'k str, prefix: &str, delimiter: Option<&str>) -> Option<&'k str> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = &key[prefix.len()..];
    rest.find(d).map(|at| &key[..prefix.len() + at + d.len()])
}

/// One entry of a page: the item at an index, or a common prefix.
enum Entry<'k> {
    Item(usize),
    Prefix(&'k str),
}

/// The entries of a page over `keys` (sorted by key) from index `from`:
/// the keys under `prefix`, each grouped under its common prefix (once),
/// without those `keep` refuses (given the index, the key and its common
/// prefix), at most `max`. Returns them and whether more remain.
fn walk<'k, S: AsRef<str>>(
    keys: &'k [S],
    from: usize,
    prefix: &str,
    delimiter: Option<&str>,
    max: usize,
    keep: impl Fn(usize, &str, Option<&str>) -> bool,
) -> (Vec<Entry<'k>>, bool) {
    let mut entries = Vec::new();
    if max == 0 {
        return (entries, false);
    }
    let mut last_prefix: Option<&str> = None;
    for (i, key) in keys.iter().enumerate().skip(from) {
        let key = key.as_ref();
        if !key.starts_with(prefix) {
            if key > prefix {
                break;
            }
            continue;
        }
        let cp = common_prefix(key, prefix, delimiter);
        if (cp.is_some() && last_prefix == cp) || !keep(i, key, cp) {
            continue;
        }
        if entries.len() == max {
            return (entries, true);
        }
        entries.push(match cp {
            Some(cp) => {
                last_prefix = Some(cp);
                Entry::Prefix(cp)
            }
            None => Entry::Item(i),
        });
    }
    (entries, false)
}

/// The page of `keys` (sorted, unique) that `p` asks for.
pub fn list_page<S: AsRef<str>>(keys: &[S], p: &ListParams<'_>) -> Page {
    // The first key that can be on the page: after `after`, or the prefix.
    let from = keys.partition_point(|k| {
        let k = k.as_ref();
        k < p.prefix || p.after.is_some_and(|a| k <= a)
    });
    let (entries, truncated) = walk(keys, from, p.prefix, p.delimiter, p.max_keys, |_, _, cp| {
        cp.is_none_or(|cp| p.after.is_none_or(|a| cp > a))
    });
    let mut page = Page {
        truncated,
        ..Page::default()
    };
    for e in entries {
        page.next_marker = Some(match e {
            Entry::Prefix(cp) => {
                page.prefixes.push(cp.to_string());
                cp.to_string()
            }
            Entry::Item(i) => {
                page.objects.push(i);
                keys[i].as_ref().to_string()
            }
        });
    }
    if !page.truncated {
        page.next_marker = None;
    }
    page
}

/// One page of ListMultipartUploads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadsPage {
    /// Indices into the upload list of the uploads on this page.
    pub uploads: Vec<usize>,
    /// Common prefixes on this page.
    pub prefixes: Vec<String>,
    /// Whether entries remain after this page.
    pub truncated: bool,
    /// Where the next page starts: S3's `NextKeyMarker` and
    /// `NextUploadIdMarker` (none after a common prefix).
    pub next: Option<(String, Option<String>)>,
}

/// The page of `uploads` (`(key, upload id)`, sorted, unique) that a
/// ListMultipartUploads asks for: keys under `prefix`, grouped by
/// `delimiter` as in [`list_page`], after `key_marker` (or, for that very
/// key, after `id_marker`), at most `max` entries.
pub fn uploads_page<K: AsRef<str>, I: AsRef<str>>(
    uploads: &[(K, I)],
    prefix: &str,
    delimiter: Option<&str>,
    (key_marker, id_marker): (Option<&str>, Option<&str>),
    max: usize,
) -> UploadsPage {
    let key_marker = key_marker.filter(|m| !m.is_empty());
    let id_marker = id_marker.filter(|m| !m.is_empty());
    let keys: Vec<&str> = uploads.iter().map(|(k, _)| k.as_ref()).collect();
    let from = keys.partition_point(|k| *k < prefix);
    let (entries, truncated) = walk(&keys, from, prefix, delimiter, max, |i, key, cp| {
        match (cp, key_marker) {
            (_, None) => true,
            // A common prefix sorts before the keys it covers, so a marker
            // at it skips them all.
            (Some(cp), Some(m)) => cp > m,
            (None, Some(m)) => {
                key > m || (key == m && id_marker.is_some_and(|im| uploads[i].1.as_ref() > im))
            }
        }
    });
    let mut page = UploadsPage {
        truncated,
        ..UploadsPage::default()
    };
    for e in entries {
        page.next = Some(match e {
            Entry::Prefix(cp) => {
                page.prefixes.push(cp.to_string());
                (cp.to_string(), None)
            }
            Entry::Item(i) => {
                page.uploads.push(i);
                (keys[i].to_string(), Some(uploads[i].1.as_ref().to_string()))
            }
        });
    }
    if !page.truncated {
        page.next = None;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The model: every entry of the listing, then filter, then cut.
    fn naive(keys: &[String], p: &ListParams<'_>) -> (Vec<String>, bool) {
        let mut entries = BTreeSet::new();
        for k in keys.iter().filter(|k| k.starts_with(p.prefix)) {
            let e = common_prefix(k, p.prefix, p.delimiter).unwrap_or(k);
            if p.after.is_none_or(|a| e > a) {
                entries.insert(e.to_string());
            }
        }
        let all: Vec<String> = entries.into_iter().collect();
        if p.max_keys == 0 {
            return (vec![], false);
        }
        let truncated = all.len() > p.max_keys;
        (all.into_iter().take(p.max_keys).collect(), truncated)
    }

    fn entries(keys: &[String], page: &Page) -> Vec<String> {
        let mut out: Vec<String> = page.objects.iter().map(|&i| keys[i].clone()).collect();
        out.extend(page.prefixes.iter().cloned());
        out.sort();
        out
    }

    #[test]
    fn delimiter_groups_into_common_prefixes() {
        let keys: Vec<String> = [
            "a.txt",
            "photos/2024/a.jpg",
            "photos/2024/b.jpg",
            "photos/c.jpg",
            "z",
        ]
        .map(String::from)
        .to_vec();
        let p = ListParams {
            delimiter: Some("/"),
            max_keys: 1000,
            ..Default::default()
        };
        let page = list_page(&keys, &p);
        assert_eq!(page.objects, vec![0, 4]);
        assert_eq!(page.prefixes, vec!["photos/"]);
        assert!(!page.truncated);
        let p = ListParams {
            prefix: "photos/",
            delimiter: Some("/"),
            max_keys: 1000,
            ..Default::default()
        };
        let page = list_page(&keys, &p);
        assert_eq!(page.objects, vec![3]);
        assert_eq!(page.prefixes, vec!["photos/2024/"]);
    }

    #[test]
    fn pages_continue_after_a_common_prefix() {
        let keys: Vec<String> = ["a/1", "a/2", "b", "c/1"].map(String::from).to_vec();
        let mut after = None;
        let mut seen = vec![];
        loop {
            let p = ListParams {
                delimiter: Some("/"),
                after: after.as_deref(),
                max_keys: 1,
                ..Default::default()
            };
            let page = list_page(&keys, &p);
            seen.extend(entries(&keys, &page));
            if !page.truncated {
                break;
            }
            after = page.next_marker;
        }
        assert_eq!(seen, vec!["a/", "b", "c/"]);
    }

    fn key() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab/]{0,5}").unwrap()
    }

    proptest! {
        #[test]
        fn a_page_is_the_naive_models_page(
            keys in proptest::collection::btree_set(key(), 0..40),
            prefix in "[ab/]{0,2}",
            delim in prop_oneof![Just(None), Just(Some("/")), Just(Some("b")), Just(Some("ab"))],
            after in proptest::option::of(key()),
            max_keys in 0usize..8,
        ) {
            let keys: Vec<String> = keys.into_iter().collect();
            let p = ListParams { prefix: &prefix, delimiter: delim, after: after.as_deref(), max_keys };
            let page = list_page(&keys, &p);
            let (want, truncated) = naive(&keys, &p);
            prop_assert_eq!(entries(&keys, &page), want.clone());
            prop_assert_eq!(page.truncated, truncated);
            if truncated {
                prop_assert_eq!(page.next_marker, want.last().cloned());
            }
        }

        #[test]
        fn paging_visits_every_entry_once(
            keys in proptest::collection::btree_set(key(), 0..40),
            delim in prop_oneof![Just(None), Just(Some("/"))],
            max_keys in 1usize..5,
        ) {
            let keys: Vec<String> = keys.into_iter().collect();
            let all = naive(&keys, &ListParams { delimiter: delim, max_keys: usize::MAX, ..Default::default() }).0;
            let mut seen = vec![];
            let mut after: Option<String> = None;
            for _ in 0..100 {
                let p = ListParams { delimiter: delim, after: after.as_deref(), max_keys, ..Default::default() };
                let page = list_page(&keys, &p);
                seen.extend(entries(&keys, &page));
                if !page.truncated { break; }
                after = page.next_marker;
            }
            prop_assert_eq!(seen, all);
        }
    }

    fn uploads(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, i)| (k.to_string(), i.to_string()))
            .collect()
    }

    #[test]
    fn uploads_group_by_delimiter_and_page_through_markers() {
        let all = uploads(&[
            ("a.txt", "u1"),
            ("dir/x", "u2"),
            ("dir/y", "u3"),
            ("dir/y", "u4"),
            ("other/z", "u5"),
            ("z.txt", "u6"),
            ("z.txt", "u7"),
        ]);
        let page = uploads_page(&all, "", Some("/"), (None, None), 1000);
        assert_eq!(page.uploads, vec![0, 5, 6]);
        assert_eq!(page.prefixes, vec!["dir/", "other/"]);
        assert!(!page.truncated);
        assert_eq!(page.next, None);
        // Two entries a page: a common prefix is one entry however many
        // uploads it covers, and a marker at it skips them all.
        let p1 = uploads_page(&all, "", Some("/"), (None, None), 2);
        assert_eq!(
            (p1.uploads.clone(), p1.prefixes.clone()),
            (vec![0], vec!["dir/".to_string()])
        );
        assert_eq!(p1.next, Some(("dir/".to_string(), None)));
        let p2 = uploads_page(&all, "", Some("/"), (Some("dir/"), None), 2);
        assert_eq!(
            (p2.uploads.clone(), p2.prefixes.clone()),
            (vec![5], vec!["other/".to_string()])
        );
        assert_eq!(p2.next, Some(("z.txt".to_string(), Some("u6".to_string()))));
        let p3 = uploads_page(&all, "", Some("/"), (Some("z.txt"), Some("u6")), 2);
        assert_eq!((p3.uploads.clone(), p3.prefixes.clone()), (vec![6], vec![]));
        assert!(!p3.truncated);
        // Under a prefix, the delimiter applies to the rest of the key.
        let page = uploads_page(&all, "dir/", Some("/"), (None, None), 1000);
        assert_eq!(page.uploads, vec![1, 2, 3]);
        assert!(page.prefixes.is_empty());
        // No delimiter: every upload, and an upload-id marker inside one key.
        let page = uploads_page(&all, "", None, (Some("dir/y"), Some("u3")), 1000);
        assert_eq!(page.uploads, vec![3, 4, 5, 6]);
        // A key marker alone skips every upload of that key.
        let page = uploads_page(&all, "", None, (Some("dir/y"), None), 1000);
        assert_eq!(page.uploads, vec![4, 5, 6]);
    }
}
