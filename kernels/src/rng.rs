//! Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"), the
//! counter-based generator behind every random number in a run.
//!
//! A counter-based generator maps (key, counter) to random bits with no hidden state, so the
//! number used for neuron `n` at step `t` is the same whichever thread, shard or device asks for
//! it. The key is the model seed; the counter is `[stream, entity, index_lo, index_hi]`.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block: ten rounds over `counter` with the Weyl-bumped `key`.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// Eight Philox blocks of the counters `[c0, first + i, c2, c3]` (i = 0..8), the lanes of AVX2
/// registers: a 32x32-bit multiply gives even lanes' 64-bit products, shifted odd lanes the
/// others', and blends put their halves back in lane order. Word j of block i is `[j][i]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn philox4x32_10_x8(c0: u32, first: u32, c2: u32, c3: u32, key: [u32; 2]) -> [[u32; 8]; 4] {
    use std::arch::x86_64::*;
    let splat = |x: u32| _mm256_set1_epi32(x as i32);
    // (high, low) halves of m x each lane of x.
    let mul = |m: __m256i, x: __m256i| {
        let even = _mm256_mul_epu32(m, x);
        let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(m), _mm256_srli_epi64::<32>(x));
        (_mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(even), odd), _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd)))
    };
    let mut c = [splat(c0), _mm256_add_epi32(splat(first), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), splat(c2), splat(c3)];
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mul(splat(M0), c[0]);
        let (hi1, lo1) = mul(splat(M1), c[2]);
        c = [_mm256_xor_si256(_mm256_xor_si256(hi1, c[1]), splat(k[0])), lo1, _mm256_xor_si256(_mm256_xor_si256(hi0, c[3]), splat(k[1])), lo0];
    }
    c.map(|v| {
        let mut lanes = [0u32; 8];
        // SAFETY: `lanes` holds 32 bytes; the store needs no alignment.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
        lanes
    })
}

/// [`philox4x32_10_x8`] for sixteen blocks in AVX-512 registers, as two runs of eight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn philox4x32_10_x16(c0: u32, first: u32, c2: u32, c3: u32, key: [u32; 2]) -> [[[u32; 8]; 4]; 2] {
    use std::arch::x86_64::*;
    let splat = |x: u32| _mm512_set1_epi32(x as i32);
    let mul = |m: __m512i, x: __m512i| {
        let even = _mm512_mul_epu32(m, x);
        let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(m), _mm512_srli_epi64::<32>(x));
        (_mm512_mask_blend_epi32(0xaaaa, _mm512_srli_epi64::<32>(even), odd), _mm512_mask_blend_epi32(0xaaaa, even, _mm512_slli_epi64::<32>(odd)))
    };
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut c = [splat(c0), _mm512_add_epi32(splat(first), lanes), splat(c2), splat(c3)];
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mul(splat(M0), c[0]);
        let (hi1, lo1) = mul(splat(M1), c[2]);
        c = [_mm512_xor_si512(_mm512_xor_si512(hi1, c[1]), splat(k[0])), lo1, _mm512_xor_si512(_mm512_xor_si512(hi0, c[3]), splat(k[1])), lo0];
    }
    let words: [[u32; 16]; 4] = c.map(|v| {
        let mut lanes = [0u32; 16];
        // SAFETY: `lanes` holds 64 bytes; the store needs no alignment.
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), v) };
        lanes
    });
    std::array::from_fn(|half| std::array::from_fn(|j| std::array::from_fn(|i| words[j][8 * half + i])))
}

/// What a random stream is used for; the high half of the counter's first word.
///
/// Streams never overlap: each purpose has its own tag, and the low half carries the index of
/// the population, projection or input it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Purpose {
    /// Initial membrane potential and synaptic state of a population's neurons.
    InitialState = 1,
    /// Which presynaptic neurons a projection connects (per postsynaptic or presynaptic neuron).
    Connectivity = 2,
    /// Per-synapse weights and delays drawn from distributions.
    SynapseParameters = 3,
    /// Poisson input counts, per neuron and step.
    PoissonInput = 4,
    /// Structural plasticity: the sources, weights and delays of regrown synapses, per
    /// projection and target neuron, one run of blocks per plan ([`Key::stream_at`]).
    Structural = 5,
    /// Poisson input rates drawn per neuron (per input and target neuron).
    InputRate = 6,
    /// The in-degrees of a `fixed_total_number` projection: one stream per split of its target
    /// range, keyed by the projection and the split's midpoint.
    InDegrees = 7,
    /// Neuron parameters drawn per neuron (the bias current `i_e_pa`), per population and neuron.
    NeuronParameters = 8,
}

/// The seed of a run, split into Philox's two key words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key(pub [u32; 2]);

impl Key {
    pub fn from_seed(seed: u64) -> Self {
        Key([seed as u32, (seed >> 32) as u32])
    }

    /// Four random words for (purpose, index, entity, step).
    #[inline]
    pub fn block(self, purpose: Purpose, index: u16, entity: u32, step: u64) -> [u32; 4] {
        let stream = ((purpose as u32) << 16) | u32::from(index);
        philox4x32_10([stream, entity, step as u32, (step >> 32) as u32], self.0)
    }

    /// `block` for each entity of `entities` in order, sixteen or eight at a time side by side
    /// where the CPU has AVX-512 or AVX2 (the same words: Philox is integer arithmetic), for
    /// per-neuron draws of a step such as the Poisson input.
    #[inline]
    pub fn for_each_block(self, purpose: Purpose, index: u16, entities: std::ops::Range<u32>, step: u64, mut f: impl FnMut(u32, [u32; 4])) {
        self.for_each_block8(purpose, index, entities, step, |first, n, w| {
            for i in 0..n {
                f(first + i as u32, [w[0][i], w[1][i], w[2][i], w[3][i]]);
            }
        });
    }

    /// `block` for the entities of `entities` in runs of eight (fewer in the last), as words
    /// side by side: `f(first, n, w)` gets word j of entity `first + i` in `w[j][i]` for i below
    /// n, a layout that loops over the eight vectorise on.
    #[inline(always)]
    pub fn for_each_block8(self, purpose: Purpose, index: u16, entities: std::ops::Range<u32>, step: u64, mut f: impl FnMut(u32, usize, &[[u32; 8]; 4])) {
        let stream = ((purpose as u32) << 16) | u32::from(index);
        let (lo, hi) = (step as u32, (step >> 32) as u32);
        let mut entity = entities.start;
        // `saturating_sub`: an empty range may be given with its start past its end.
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            while entities.end.saturating_sub(entity) >= 16 {
                // SAFETY: the CPU has AVX-512F (checked above).
                let [a, b] = unsafe { philox4x32_10_x16(stream, entity, lo, hi, self.0) };
                f(entity, 8, &a);
                f(entity + 8, 8, &b);
                entity += 16;
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            while entities.end.saturating_sub(entity) >= 8 {
                // SAFETY: the CPU has AVX2 (checked above).
                let words = unsafe { philox4x32_10_x8(stream, entity, lo, hi, self.0) };
                f(entity, 8, &words);
                entity += 8;
            }
        }
        while entity < entities.end {
            let n = (entities.end - entity).min(8) as usize;
            let mut words = [[0u32; 8]; 4];
            for i in 0..n {
                let w = philox4x32_10([stream, entity + i as u32, lo, hi], self.0);
                (0..4).for_each(|j| words[j][i] = w[j]);
            }
            f(entity, n, &words);
            entity += n as u32;
        }
    }

    /// An endless stream of words for one (purpose, index, entity), for the builder, which
    /// needs a variable amount of randomness per neuron.
    pub fn stream(self, purpose: Purpose, index: u16, entity: u32) -> Stream {
        self.stream_at(purpose, index, entity, 0)
    }

    /// Like [`Key::stream`], from block `first_block` on: disjoint runs of one entity's
    /// counter space (e.g. `plan << 32` for the plan-th plan).
    pub fn stream_at(self, purpose: Purpose, index: u16, entity: u32, first_block: u64) -> Stream {
        Stream { key: self, purpose, index, entity, block: first_block, words: [0; 4], used: 4 }
    }

    /// The stream of (purpose, index, entity) at a [`Stream::position`], as left by the device
    /// (`plan_regrow` in kernels/cuda/fum.cu draws a stream's first words, the host the rest).
    pub fn stream_resumed(self, purpose: Purpose, index: u16, entity: u32, (block, used): (u64, u32)) -> Stream {
        let mut s = Stream { key: self, purpose, index, entity, block, words: [0; 4], used: 4 };
        if used < 4 && block > 0 {
            s.words = self.block(purpose, index, entity, block - 1);
            s.used = used as usize;
        }
        s
    }
}

/// Sequential words drawn from consecutive Philox blocks of one (purpose, index, entity).
pub struct Stream {
    key: Key,
    purpose: Purpose,
    index: u16,
    entity: u32,
    block: u64,
    words: [u32; 4],
    used: usize,
}

impl Stream {
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            self.words = self.key.block(self.purpose, self.index, self.entity, self.block);
            self.block += 1;
            self.used = 0;
        }
        self.used += 1;
        self.words[self.used - 1]
    }

    /// Where the stream stands: the next block it generates and how many words of the
    /// current one are used (4: none left), for [`Key::stream_resumed`].
    pub fn position(&self) -> (u64, u32) {
        (self.block, self.used as u32)
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        uniform_f64(self.next_u32(), self.next_u32())
    }

    /// Uniform integer in [0, n) without modulo bias (Lemire's multiply-shift with rejection).
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        debug_assert!(n > 0);
        loop {
            let m = u64::from(self.next_u32()) * u64::from(n);
            let low = m as u32;
            if low >= n.wrapping_neg() % n {
                return (m >> 32) as u32;
            }
        }
    }

    /// Standard normal deviate from the next two 53-bit uniforms (four words).
    #[inline]
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        box_muller(u1, self.uniform())
    }
}

/// Standard normal deviate (Box-Muller, the cosine one of the pair) from two uniforms in
/// [0, 1). `1 - u1` lies in (0, 1], so the logarithm stays finite.
#[inline]
pub fn box_muller(u1: f64, u2: f64) -> f64 {
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Standard normal deviate from two words, each spread over a 53-bit uniform with itself
/// rotated by 16 bits: the deviate of the Poisson normal approximation, which has only two words
/// of its Philox block left (`poisson` in kernels/cuda/fum.cu computes the same).
#[inline]
pub fn normal_from(a: u32, b: u32) -> f64 {
    box_muller(uniform_f64(a, a.rotate_left(16)), uniform_f64(b, b.rotate_left(16)))
}

/// Uniform in [0, 1) from two words, 53 bits.
#[inline]
pub fn uniform_f64(hi: u32, lo: u32) -> f64 {
    let bits = (u64::from(hi) << 21) ^ u64::from(lo >> 11);
    bits as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A Poisson count with mean `lambda`, given `exp_minus_lambda` precomputed on the host and one
/// uniform `u` in [0, 1): sequential search of the cumulative distribution (exact; the loop runs
/// about `lambda` times, fine for the per-step means of input generators). Above a mean of 64 a
/// rounded normal approximation is used (`normal` is a standard deviate), where the relative
/// error of the approximation is below the sampling noise of a single step.
#[inline]
pub fn poisson(lambda: f64, exp_minus_lambda: f64, u: f64, normal: f64) -> u32 {
    if lambda > 64.0 {
        return (lambda + lambda.sqrt() * normal).round().max(0.0) as u32;
    }
    let mut k = 0u32;
    let mut p = exp_minus_lambda;
    let mut cdf = p;
    while u > cdf && k < 1024 {
        k += 1;
        p = p * lambda / f64::from(k);
        cdf += p;
    }
    k
}

/// The cumulative distribution `poisson` walks for one mean of at most 64, computed once with
/// the same operations in the same order, so that a search of it returns `poisson`'s count bit
/// for bit without `poisson`'s divisions and unpredictable loop exit (the CPU's Poisson input:
/// one table per input, a draw per neuron and step). The device keeps the loop
/// (kernels/cuda/fum.cu).
#[derive(Clone, Debug, Default)]
pub struct PoissonCdf {
    /// `cdf[k]`: the loop's running sum after term k, for k below the loop's cap of 1024.
    cdf: Vec<f64>,
    /// Where nearly every draw ends (the mean plus four standard deviations and some): counted
    /// there without branches, since a branch on a random count mispredicts about once a draw.
    window: usize,
}

impl PoissonCdf {
    pub fn new(lambda: f64, exp_minus_lambda: f64) -> PoissonCdf {
        let mut cdf = Vec::with_capacity(1024);
        let (mut p, mut sum) = (exp_minus_lambda, exp_minus_lambda);
        cdf.push(sum);
        for k in 1..1024u32 {
            p = p * lambda / f64::from(k);
            sum += p;
            cdf.push(sum);
        }
        let window = ((lambda + 4.0 * lambda.sqrt() + 4.0).ceil() as usize).next_multiple_of(8).min(cdf.len());
        PoissonCdf { cdf, window }
    }

    /// [`PoissonCdf::sample`] of the uniforms of eight blocks side by side (words 0 and 1):
    /// the window's comparisons for all eight at once; a count that reaches the window's end
    /// (rare by its choice) continues in `sample`.
    #[inline(always)]
    fn counts8(&self, w: &[[u32; 8]; 4]) -> [u32; 8] {
        let head = &self.cdf[..self.window];
        let u: [f64; 8] = std::array::from_fn(|i| uniform_f64(w[0][i], w[1][i]));
        let mut k = [0u32; 8];
        for &c in head {
            for i in 0..8 {
                k[i] += u32::from(u[i] > c);
            }
        }
        if k.iter().any(|&k| k as usize == head.len()) {
            for i in 0..8 {
                if k[i] as usize == head.len() {
                    k[i] = self.sample(u[i]);
                }
            }
        }
        k
    }

    /// `poisson(lambda, exp_minus_lambda, u, _)` for this table's mean: the first k with
    /// `u <= cdf[k]`, or the cap. The sums never decrease, so within the window that k is the
    /// number of sums below `u`.
    #[inline]
    pub fn sample(&self, u: f64) -> u32 {
        let (head, tail) = self.cdf.split_at(self.window);
        let k = head.iter().fold(0u32, |n, &c| n + u32::from(u > c));
        if (k as usize) < head.len() {
            return k;
        }
        tail.iter().position(|&c| u <= c).map_or(1024, |i| (head.len() + i) as u32)
    }
}

/// Adds `quantum` times each neuron's Poisson count to `ring` (`ring[i]` for neuron
/// `neurons.start + i`): the count at `step` from `cdf` and the uniform of the neuron's Philox
/// block (PoissonInput, `index`, neuron, step), as [`PoissonCdf::sample`] gives it, eight
/// neurons at a time side by side (the CPU's Poisson input for an input of one rate).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512bw+avx512vl", "x86_64+avx2+fma"))]
pub fn add_poisson_counts(key: Key, index: u16, neurons: std::ops::Range<u32>, step: u64, cdf: &PoissonCdf, quantum: i64, ring: &mut [i64]) {
    key.for_each_block8(Purpose::PoissonInput, index, neurons.clone(), step, |first, n, w| {
        let at = (first - neurons.start) as usize;
        let k = cdf.counts8(w);
        match ring[at..].first_chunk_mut::<8>() {
            Some(sums) if n == 8 => (0..8).for_each(|i| sums[i] += i64::from(k[i]) * quantum),
            _ => (0..n).for_each(|i| ring[at + i] += i64::from(k[i]) * quantum),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table gives the loop's count for every uniform: Philox draws, the table's own values
    /// and their neighbours (where a comparison flips), at means from none to the cap of 64.
    #[test]
    fn poisson_cdf_returns_the_loops_count_bit_for_bit() {
        let key = Key::from_seed(7);
        for lambda in [0.0f64, 1e-9, 0.03, 0.5, 2.0, 2.5, 9.75, 37.3, 64.0] {
            let e = (-lambda).exp();
            let table = PoissonCdf::new(lambda, e);
            let mut us: Vec<f64> = (0..20_000u32).map(|i| { let w = key.block(Purpose::PoissonInput, 0, i, 3); uniform_f64(w[0], w[1]) }).collect();
            for &c in table.cdf.iter().take(200) {
                us.extend([c, f64::from_bits(c.to_bits().wrapping_sub(1)), f64::from_bits(c.to_bits() + 1)].into_iter().filter(|u| (0.0..1.0).contains(u)));
            }
            us.extend([0.0, 1.0 - f64::EPSILON]);
            for u in us {
                assert_eq!(table.sample(u), poisson(lambda, e, u, 0.0), "mean {lambda}, u {u:e}");
            }
        }
    }

    /// The input's counts eight neurons at a time are `poisson`'s one at a time, for any run of
    /// neurons, inside the table's window and past it (a narrowed window sends most draws of
    /// the larger means there).
    #[test]
    fn poisson_counts_eight_at_a_time_are_the_loops_counts() {
        let key = Key::from_seed(11);
        for lambda in [0.0f64, 0.15, 2.0, 9.75, 64.0] {
            let e = (-lambda).exp();
            let table = PoissonCdf::new(lambda, e);
            let narrow = PoissonCdf { window: 8, ..table.clone() };
            for cdf in [&table, &narrow] {
                for (start, len) in [(0u32, 0u32), (0, 5), (3, 29), (1000, 64)] {
                    for step in [0u64, 7, (3 << 32) | 5] {
                        let mut ring = vec![1i64; len as usize];
                        add_poisson_counts(key, 2, start..start + len, step, cdf, 3, &mut ring);
                        let want: Vec<i64> = (start..start + len)
                            .map(|n| {
                                let w = key.block(Purpose::PoissonInput, 2, n, step);
                                1 + 3 * i64::from(poisson(lambda, e, uniform_f64(w[0], w[1]), 0.0))
                            })
                            .collect();
                        assert_eq!(ring, want, "mean {lambda}, window {}, neurons {start}+{len}, step {step}", cdf.window);
                    }
                }
            }
        }
    }

    /// Sixteen and eight blocks side by side (AVX-512, AVX2, where the CPU has them) are the
    /// scalar blocks, for runs
    /// of any length and offset, across a step's 32-bit halves.
    #[test]
    fn blocks_side_by_side_are_the_scalar_blocks() {
        let key = Key::from_seed(0x1234_5678_9abc_def0);
        // An empty range may come with its start past its end (a source outside a shard).
        for step in [0u64, 5] {
            key.for_each_block(Purpose::PoissonInput, 3, 100..40, step, |e, _| panic!("entity {e} of an empty range"));
        }
        for (start, len) in [(0u32, 0u32), (0, 7), (0, 8), (3, 29), (u32::MAX - 20, 20), (1000, 64)] {
            for step in [0u64, 1, 12_345, (7 << 32) | 99] {
                let mut got = Vec::new();
                key.for_each_block(Purpose::PoissonInput, 3, start..start + len, step, |e, w| got.push((e, w)));
                let want: Vec<_> = (start..start + len).map(|e| (e, key.block(Purpose::PoissonInput, 3, e, step))).collect();
                assert_eq!(got, want, "entities {start}+{len}, step {step}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if !std::is_x86_feature_detected!("avx512f") || !std::is_x86_feature_detected!("avx2") {
            eprintln!("this CPU lacks AVX-512F or AVX2: those paths were not compared");
        }
    }

    /// Known-answer vectors from Random123's kat_vectors for philox4x32_10.
    #[test]
    fn philox_matches_random123_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    /// A stream resumed at a position goes on with the words the original would give.
    #[test]
    fn a_resumed_stream_continues_where_it_stood() {
        let key = Key::from_seed(3);
        for taken in [0, 1, 3, 4, 5, 8, 11] {
            let mut s = key.stream_at(Purpose::Structural, 2, 7, 5 << 32);
            (0..taken).for_each(|_| {
                s.next_u32();
            });
            let mut resumed = key.stream_resumed(Purpose::Structural, 2, 7, s.position());
            let ahead: Vec<u32> = (0..9).map(|_| s.next_u32()).collect();
            assert_eq!((0..9).map(|_| resumed.next_u32()).collect::<Vec<_>>(), ahead, "after {taken} words");
        }
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut s = Key::from_seed(7).stream(Purpose::InitialState, 0, 0);
        let n = 200_000;
        let (mut su, mut sn, mut sn2) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            su += s.uniform();
            let z = s.normal();
            sn += z;
            sn2 += z * z;
        }
        let n = n as f64;
        assert!((su / n - 0.5).abs() < 0.005);
        assert!((sn / n).abs() < 0.01);
        assert!((sn2 / n - 1.0).abs() < 0.02);
    }

    /// Pinned bits (from the Box-Muller each call site had before they shared one): the
    /// normals feed the initial state and the Poisson approximation, and a change in a last bit
    /// changes every run's spikes.
    #[test]
    fn normals_are_pinned() {
        let z = Key::from_seed(7).stream(Purpose::InitialState, 0, 0).normal();
        assert_eq!(z.to_bits(), 0xbffb_4f18_363a_cc02, "{z}");
        let z = normal_from(0x1234_5678, 0x9abc_def0);
        assert_eq!(z.to_bits(), 0xbfd3_79f1_eb54_b608, "{z}");
        assert_eq!(normal_from(0, 0), 0.0, "u1 = 0: ln(1) = 0, not a NaN");
        assert!(normal_from(u32::MAX, 0).is_finite(), "u1 just below 1 keeps the logarithm finite");
    }

    #[test]
    fn poisson_mean_and_variance() {
        for lambda in [0.05f64, 1.6, 20.0, 200.0] {
            let key = Key::from_seed(3);
            let n = 100_000u32;
            let (mut s1, mut s2) = (0.0, 0.0);
            for i in 0..n {
                let w = key.block(Purpose::PoissonInput, 0, i, 0);
                let z = Key::from_seed(4).stream(Purpose::PoissonInput, 1, i).normal();
                let k = f64::from(poisson(lambda, (-lambda).exp(), uniform_f64(w[0], w[1]), z));
                s1 += k;
                s2 += k * k;
            }
            let mean = s1 / f64::from(n);
            let var = s2 / f64::from(n) - mean * mean;
            let tol = 5.0 * (lambda / f64::from(n)).sqrt() + 0.01 * lambda;
            assert!((mean - lambda).abs() < tol, "lambda {lambda}: mean {mean}");
            assert!((var - lambda).abs() < 0.05 * lambda + 0.01, "lambda {lambda}: var {var}");
        }
    }

    #[test]
    fn below_is_in_range_and_uniform() {
        let mut s = Key::from_seed(1).stream(Purpose::Connectivity, 0, 0);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[s.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
