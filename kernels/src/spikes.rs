//! Spike lists: the ids that fired in a step, ascending, as the exchange, the recorder and the
//! observer hold them.

use std::ops::Range;

/// The positions in `spikes` (ascending ids) of the ids in `ids`: the spikes of one population,
/// or of one synapse block's sources, are one run of the list, found by two binary searches.
#[inline]
pub fn in_range(spikes: &[u32], ids: Range<u32>) -> Range<usize> {
    let start = spikes.partition_point(|&g| g < ids.start);
    let end = start + spikes[start..].partition_point(|&g| g < ids.end);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_of_each_range() {
        let spikes = [2, 3, 3, 7, 10, 11, 20];
        assert_eq!(in_range(&spikes, 0..2), 0..0);
        assert_eq!(in_range(&spikes, 0..3), 0..1);
        assert_eq!(in_range(&spikes, 3..4), 1..3);
        assert_eq!(in_range(&spikes, 4..7), 3..3);
        assert_eq!(in_range(&spikes, 7..11), 3..5);
        assert_eq!(in_range(&spikes, 10..u32::MAX), 4..7);
        assert_eq!(in_range(&spikes, 21..30), 7..7);
        assert_eq!(in_range(&spikes, 0..u32::MAX), 0..7);
        assert_eq!(in_range(&[], 0..10), 0..0);
        assert_eq!(in_range(&spikes, 11..11), 5..5, "an empty range of ids holds no spikes");
    }

    /// Every id lands in exactly the range that contains it.
    #[test]
    fn ranges_that_tile_the_ids_split_the_list() {
        let spikes: Vec<u32> = (0..200).filter(|i| i % 3 != 1).map(|i| i * 7 / 5).collect();
        let bounds = [0, 1, 17, 17, 60, 199, 280, 400];
        let mut covered = 0;
        for w in bounds.windows(2) {
            let r = in_range(&spikes, w[0]..w[1]);
            assert_eq!(r.start, covered);
            assert!(spikes[r.clone()].iter().all(|g| (w[0]..w[1]).contains(g)));
            covered = r.end;
        }
        assert_eq!(covered, spikes.len());
    }
}
