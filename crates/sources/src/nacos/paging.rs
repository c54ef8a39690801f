//! A service list read page by page is a consistent view only if nothing moved between
//! the pages: Nacos pages by offset, so a service removed from page 1 shifts one from
//! page 2 onto page 1 after it was read — that service would be missing from the
//! listing, deleted, and created again on the next round. Every page reports the total,
//! so a listing whose total changed while it was read, or whose pages do not add up to
//! it, is read again, and after [`ATTEMPTS`] is a failure, never a shorter listing.

use std::collections::BTreeSet;

/// Reads of a whole listing before giving up on a consistent one.
pub(super) const ATTEMPTS: usize = 3;

/// A listing being read.
pub(super) struct Pages<T: Ord> {
    total: Option<u64>,
    items: BTreeSet<T>,
    pages: usize,
}

/// What the pages read so far say.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Ask for the next page.
    More,
    /// Every item of the total is in.
    Complete,
    /// The total moved or the pages do not add up: read the listing again.
    Moved,
}

impl<T: Ord> Pages<T> {
    pub(super) fn new() -> Pages<T> {
        Pages {
            total: None,
            items: BTreeSet::new(),
            pages: 0,
        }
    }

    /// Takes one page: its items and the total it reports; `full` when the page was as
    /// long as the page size asked for.
    pub(super) fn add(&mut self, total: u64, items: impl IntoIterator<Item = T>, full: bool) -> Progress {
        self.pages += 1;
        if *self.total.get_or_insert(total) != total {
            return Progress::Moved;
        }
        let before = self.items.len();
        self.items.extend(items);
        let added = self.items.len() - before;
        let have = self.items.len() as u64;
        match (have.cmp(&total), full && added > 0) {
            (std::cmp::Ordering::Equal, _) => Progress::Complete,
            (std::cmp::Ordering::Greater, _) => Progress::Moved,
            (std::cmp::Ordering::Less, true) => Progress::More,
            // A short or empty page before the total is reached: something left.
            (std::cmp::Ordering::Less, false) => Progress::Moved,
        }
    }

    pub(super) fn pages(&self) -> usize {
        self.pages
    }

    pub(super) fn into_items(self) -> Vec<T> {
        self.items.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_that_add_up_to_their_total_are_complete() {
        let mut pages = Pages::new();
        assert_eq!(pages.add(5, ["a", "b"], true), Progress::More);
        assert_eq!(pages.add(5, ["c", "d"], true), Progress::More);
        assert_eq!(pages.add(5, ["e"], false), Progress::Complete);
        assert_eq!(pages.into_items(), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn a_service_removed_between_pages_makes_the_listing_move_not_shrink() {
        // "b" goes after page 1 was read: "c" shifts onto page 1, page 2 starts at "d".
        let mut pages = Pages::new();
        assert_eq!(pages.add(5, ["a", "b"], true), Progress::More);
        assert_eq!(pages.add(4, ["d", "e"], true), Progress::Moved);
    }

    #[test]
    fn pages_that_fall_short_of_their_total_move() {
        let mut pages = Pages::new();
        assert_eq!(pages.add(5, ["a", "b"], true), Progress::More);
        assert_eq!(pages.add(5, ["d"], false), Progress::Moved);
        let mut pages = Pages::new();
        assert_eq!(pages.add(3, ["a", "b"], true), Progress::More);
        assert_eq!(pages.add(3, Vec::<&str>::new(), false), Progress::Moved);
    }

    #[test]
    fn an_empty_registry_is_complete_at_once() {
        let mut pages = Pages::<&str>::new();
        assert_eq!(pages.add(0, [], false), Progress::Complete);
    }

    #[test]
    fn a_service_added_between_pages_moves_the_total() {
        let mut pages = Pages::new();
        assert_eq!(pages.add(4, ["a", "b"], true), Progress::More);
        assert_eq!(pages.add(5, ["b", "c"], true), Progress::Moved);
    }
}
