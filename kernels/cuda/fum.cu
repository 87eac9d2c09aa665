// fum's CUDA kernels: the GPU twins of the CPU kernels in kernels/src (lif.rs, rng.rs,
// delivery.rs, stdp.rs), with the same constants and the same order of operations, so that
// `lif_cuba` and `lif_psc_alpha` networks give the same bits on both backends. Compiled at
// start-up by NVRTC with --fmad=false: Rust never fuses a multiply and an add, so neither may
// we. f64 and f32 division and sqrt are IEEE-rounded (NVRTC's defaults). Exponentials and
// powers inside a step are portable.rs's, twinned below (portable_expf, portable_pow). The
// f64 log/cos of the Poisson normal approximation (means above 64 per step) are not
// bit-identical across backends; everything else is.
//
// Every kernel reads the step from device memory (`step`), so one captured CUDA graph replays
// every step; the last block of `record` to finish increments it at the end of the step.
//
// Layout (arrays over the N neurons this process holds, a contiguous range of global ids from
// `base`: all of them, from 0, unless ranks share the network; a shard is a range of them):
//   v, syn_ex, syn_in: f32[N]; refractory: u32[N]; fired: u8[N]
//   dsyn_ex, dsyn_in: f32[N] where some population is lif_psc_alpha, else null
//   bias: f32[N] where some population draws its bias current per neuron, else null
//   ring_ex, ring_in: i64[slots][N], fixed point 2^-24 (delivery.rs)
//   spikes: u32[total] (ascending global ids of this step, of every rank), n_spikes: u32
// Synapses: one Block per (projection, shard), CSR rows keyed by presynaptic index in the
// source population, u16 shard-local targets (u32 in shards over 65,536 neurons: target_wide),
// f32 or f16 weights.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned short u16;
typedef unsigned char u8;

#define NEVER 0xffffffffu

struct Block {
    u64 row_ptr;        // const u32*: row r spans row_ptr[r] .. row_ptr[r + 1]
    u64 target;         // const u16* (u32* when target_wide): shard-local index
    u64 delay;          // const u16*, or 0 when every synapse has `const_delay`
    u64 weight;         // float* or f16 bits (u16*)
    u64 ring;           // i64*: ring of the receptor, [slot][N]
    u64 post;           // Post*: per shard-local target (plastic blocks)
    u64 history;        // u32*: ring of the last `history_len` postsynaptic spike steps per target
    u32 source_first, source_size, shard_first, shard_size;
    u32 const_delay, weight_f16, rule, history_len;  // rule: index of the Rule, or NEVER
    // The device row cache of a block in host memory (engine/src/row_cache.rs), or all 0: the
    // first `cache_len` synapses of row r are at [cache_row[r] * cache_len ...] of the cache
    // columns when cache_row[r] != NEVER, else only in the block's own columns.
    u64 cache_row;      // u32*: slot of each row, or NEVER
    u64 cache_target;   // as `target`
    u64 cache_delay;    // u16*, or 0 with `const_delay`
    u64 cache_weight;   // as `weight`
    u32 cache_len;
    u32 local_first;    // shard_first - base: the shard's place in the per-neuron arrays
    u32 row_lanes;      // lanes of a warp that walk one row in `deliver`: 4, 8, 16 or 32
    u32 row_split;      // groups of row_lanes lanes that walk one row together, each a share
    u64 history_trace;  // float*: the trace just after each `history` entry (dendritic rules), or 0
    u32 target_wide;    // 1: targets are u32 (a shard of more than 65,536 neurons)
    u32 unused;
};

// What a plastic synapse needs of its target, packed so that one 16-byte load fetches it
// (stdp.rs keeps the same four values in separate columns).
struct __align__(16) Post {
    float trace;  // postsynaptic trace just after the last spike
    u32 last;     // step of the last postsynaptic spike, or NEVER
    u32 count;    // spikes pushed into the history
    u32 floor;    // step of the newest overwritten history entry, or NEVER
};

// dependence: RULE_ADDITIVE, RULE_MULTIPLICATIVE or RULE_POWER_LAW (with exponent mu).
struct Rule {
    float a_plus, a_minus, w_min, w_max;
    u32 dependence, nearest, pre_decay_len, post_decay_len;
    u64 pre_decay, post_decay;  // const float*: exp(-n dt / tau) tables
    u64 pre_trace, pre_last;    // float*, u32*: presynaptic traces of the source population
    u32 source_first, source_size, target_first, target_size;
    float mu; u32 dendritic;  // dendritic: the delay is dendritic (NEST's timing)
};

#define RULE_ADDITIVE 0u
#define RULE_MULTIPLICATIVE 1u
#define RULE_POWER_LAW 2u

struct Cuba {
    float e_l, v_th, v_reset; u32 refractory_steps;
    float p22, p20, p21_ex, p21_in, p11_ex, p11_in;
};

struct Coba {
    float e_l, v_th, v_reset; u32 refractory_steps;
    float e_ex, e_in, g_l, minus_h_over_c, p11_ex, p11_in;
};

// lif.rs: AlphaPropagators (NEST's iaf_psc_alpha); p11 at the place Cuba and Coba keep it.
struct Alpha {
    float e_l, v_th, v_reset; u32 refractory_steps;
    float p33, p30, p31_ex, p31_in, p11_ex, p11_in, p32_ex, p32_in, p21_ex, p21_in, psc_ex, psc_in;
};

// source.rs: a spike source's schedule, keys (step << 32 | population-local neuron) sorted
// ascending, as two words (a u64 would align the union to 8 and move it in struct Pop), its
// length and the population's first global id.
struct Source {
    u32 schedule_lo, schedule_hi, len, pop_first;
};

struct Probe {
    u64 source;  // const float* (v, syn_ex, syn_in), or the Block* of a weight probe
    u32 index;   // the neuron's place in this GPU's arenas, or the synapse's in its block
    u32 kind;    // 0: a neuron's f32 column, 1: a synapse's weight, 2: NaN (a synapse that does not exist, or a site another GPU holds)
    u32 interval_steps;
    u32 pad;
};

// ---- numerics shared with the CPU (delivery.rs, lif.rs) ----

__device__ __forceinline__ float flush_subnormal(float x) {
    return fabsf(x) < 1.17549435082228750797e-38f ? 0.0f : x;
}

// weight * 2^24 rounded to nearest, ties to even (delivery::to_fixed).
__device__ __forceinline__ i64 to_fixed(float w) {
    return __double2ll_rn(__dmul_rn((double)w, 16777216.0));
}

// delivery::from_fixed: exact conversion, exact scaling, one rounding to f32.
__device__ __forceinline__ float from_fixed(i64 s) {
    return __double2float_rn(__dmul_rn(__ll2double_rn(s), 1.0 / 16777216.0));
}

__device__ __forceinline__ float half_to_float(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 float_to_half(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Where one synapse's target, delay and weight are: index `i` of the block's own columns or of
// its row cache (see `struct Block` and `locate`).
struct Syn {
    u64 target, delay, weight, i;
};

// A target stored as u16 or, in a shard of more than 65,536 neurons, u32.
__device__ __forceinline__ u32 load_target(u64 target, u32 wide, u64 k) {
    return wide ? ((const u32*)target)[k] : ((const u16*)target)[k];
}

__device__ __forceinline__ float load_weight_at(const Block& b, const Syn& s) {
    return b.weight_f16 ? half_to_float(((const u16*)s.weight)[s.i]) : ((const float*)s.weight)[s.i];
}

__device__ __forceinline__ void store_weight_at(const Block& b, const Syn& s, float w) {
    if (b.weight_f16) ((u16*)s.weight)[s.i] = float_to_half(w);
    else ((float*)s.weight)[s.i] = w;
}

// Synapse k of the block's own columns.
__device__ __forceinline__ Syn own(const Block& b, u64 k) {
    return Syn{b.target, b.delay, b.weight, k};
}

__device__ __forceinline__ float load_weight(const Block& b, u64 k) {
    return load_weight_at(b, own(b, k));
}

// ---- Philox4x32-10 (rng.rs) ----

__device__ __forceinline__ void philox(u32 c[4], u32 k0, u32 k1) {
    #pragma unroll
    for (int round = 0; round < 10; round++) {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        u32 hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        u32 hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        u32 n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
    }
}

__device__ __forceinline__ double uniform_f64(u32 hi, u32 lo) {
    u64 bits = ((u64)hi << 21) ^ (u64)(lo >> 11);
    return __dmul_rn(__ull2double_rn(bits), 1.0 / 9007199254740992.0);
}

__device__ __forceinline__ u32 rotl16(u32 x) { return (x << 16) | (x >> 16); }

__device__ u32 poisson(double lambda, double eml, double u, u32 a, u32 b) {
    if (lambda > 64.0) {
        double u1 = __dsub_rn(1.0, uniform_f64(a, rotl16(a)));
        double u2 = uniform_f64(b, rotl16(b));
        double normal = __dmul_rn(sqrt(__dmul_rn(-2.0, log(u1))), cos(__dmul_rn(6.283185307179586, u2)));
        double k = round(__dadd_rn(lambda, __dmul_rn(sqrt(lambda), normal)));
        return k > 0.0 ? (u32)k : 0u;
    }
    u32 k = 0;
    double p = eml, cdf = eml;
    while (u > cdf && k < 1024) {
        k += 1;
        p = __ddiv_rn(__dmul_rn(p, lambda), (double)k);
        cdf = __dadd_rn(cdf, p);
    }
    return k;
}

// ---- the neuron update (lif.rs: lif_pass!) with the Poisson input (systems/src/input.rs) ----

// A population's neurons held (indices first .. end of the per-neuron arrays), its model
// (kind 0: lif_cuba; 1: lif_coba, exponential Euler; 2: lif_coba, forward Euler; 3:
// lif_psc_alpha; 4: spike_source), its constants and DC current, whether each neuron adds its
// own bias (bias[g]), and the Poisson sources that reach it: srcs[src_first .. src_end].
struct Pop {
    u32 first, end, kind, src_first, src_end;
    float current;
    u32 bias_per_neuron;
    union { Cuba cuba; Coba coba; Alpha alpha; Source source; };  // the LIF models' shared fields sit at the same places
};

// source.rs, fire_scheduled: whether the schedule holds neuron `neuron` at step t (binary
// search for the exact key; the CPU finds the same keys by range).
__device__ __forceinline__ bool scheduled(const Source& s, u64 t, u32 neuron) {
    const u64* keys = (const u64*)(((u64)s.schedule_hi << 32) | s.schedule_lo);
    u64 key = (t << 32) | neuron;
    u32 lo = 0, hi = s.len;
    while (lo < hi) {
        u32 mid = (lo + hi) >> 1;
        if (keys[mid] < key) lo = mid + 1; else hi = mid;
    }
    return lo < s.len && keys[lo] == key;
}

// Independent Poisson counts into the neurons of global ids first .. end, of mean `mean`
// (exp(-mean) = `eml`), or with `rates`, of each neuron's (mean, exp(-mean)) pair.
struct Src {
    u32 stream, first, end, inhibitory;
    double mean, eml;
    u64 rates;  // const double*, or 0
    i64 quantum;
};

__device__ __forceinline__ float cuba_integrate(const Cuba& c, float vv, float ex, float inh, float current) {
    // e_l + (v - e_l) p22 + ex p21_ex - inh p21_in + I p20, left to right as in Rust.
    float drive = __fmul_rn(current, c.p20);
    return __fadd_rn(__fsub_rn(__fadd_rn(__fadd_rn(c.e_l, __fmul_rn(__fsub_rn(vv, c.e_l), c.p22)), __fmul_rn(ex, c.p21_ex)),
                               __fmul_rn(inh, c.p21_in)),
                     drive);
}

// portable.rs, expf (Cephes' expf): e^y in f32 within one ulp, the CPU's bits.
__device__ __forceinline__ float portable_expf(float y) {
    y = fminf(fmaxf(y, -87.0f), 88.0f);
    float k = floorf(__fadd_rn(__fmul_rn(y, 1.44269504f), 0.5f));
    float r = __fsub_rn(__fsub_rn(y, __fmul_rn(k, 0.693359375f)), __fmul_rn(k, -0.00021219444f));
    float p = 0.00019875691f;
    p = __fadd_rn(__fmul_rn(p, r), 0.0013981999f);
    p = __fadd_rn(__fmul_rn(p, r), 0.008333452f);
    p = __fadd_rn(__fmul_rn(p, r), 0.041665796f);
    p = __fadd_rn(__fmul_rn(p, r), 0.16666666f);
    p = __fadd_rn(__fmul_rn(p, r), 0.5f);
    float e_r = __fadd_rn(__fadd_rn(__fmul_rn(p, __fmul_rn(r, r)), r), 1.0f);
    float two_k = __uint_as_float((__float_as_uint(__fadd_rn(k, 12582912.0f)) + 127u) << 23);
    return __fmul_rn(e_r, two_k);
}

__device__ __forceinline__ float coba_integrate(const Coba& c, float vv, float ex, float inh, float current) {
    float g_total = __fadd_rn(__fadd_rn(c.g_l, ex), inh);
    float num = __fadd_rn(__fadd_rn(__fadd_rn(__fmul_rn(c.g_l, c.e_l), __fmul_rn(ex, c.e_ex)), __fmul_rn(inh, c.e_in)), current);
    float v_inf = __fdiv_rn(num, g_total);
    return __fadd_rn(v_inf, __fmul_rn(__fsub_rn(vv, v_inf), portable_expf(__fmul_rn(g_total, c.minus_h_over_c))));
}

// lif.rs, alpha_step: e_l + (v - e_l) p33 + dex p31_ex + ex p32_ex - din p31_in - inh p32_in
// + I p30, left to right as in Rust.
__device__ __forceinline__ float alpha_integrate(const Alpha& c, float vv, float ex, float inh, float dex, float din, float current) {
    float drive = __fmul_rn(current, c.p30);
    float x = __fadd_rn(c.e_l, __fmul_rn(__fsub_rn(vv, c.e_l), c.p33));
    x = __fadd_rn(x, __fmul_rn(dex, c.p31_ex));
    x = __fadd_rn(x, __fmul_rn(ex, c.p32_ex));
    x = __fsub_rn(x, __fmul_rn(din, c.p31_in));
    x = __fsub_rn(x, __fmul_rn(inh, c.p32_in));
    return __fadd_rn(x, drive);
}

// Forward Euler (lif.rs, coba_step with `euler`): v - (drive - g_total v) (-h / C), no expf,
// so the CPU's bits exactly.
__device__ __forceinline__ float coba_euler(const Coba& c, float vv, float ex, float inh, float current) {
    float g_total = __fadd_rn(__fadd_rn(c.g_l, ex), inh);
    float drive = __fadd_rn(__fadd_rn(__fadd_rn(__fmul_rn(c.g_l, c.e_l), __fmul_rn(ex, c.e_ex)), __fmul_rn(inh, c.e_in)), current);
    return __fsub_rn(vv, __fmul_rn(__fsub_rn(drive, __fmul_rn(g_total, vv)), c.minus_h_over_c));
}

// One launch for every neuron held, whatever the number of populations (a launch each cost a
// few microseconds of a step that holds little work, issue "Speed"): a thread finds its
// population, adds its Poisson counts to this step's input (integers, so in any order the
// CPU's sum), integrates, fires and resets. Each block of `NEURON_BLOCK` threads also writes
// its number of spikes to block_counts, the first pass of the spike list's compaction.
#define NEURON_BLOCK 256

__device__ __forceinline__ bool neuron(u32 g, u64 t, const Pop* pops, u32 n_pops, const Src* srcs, u32 key0, u32 key1,
                                       u32 base, u32 n, u32 slots, float* v, float* syn_ex, float* syn_in, float* dsyn_ex,
                                       float* dsyn_in, const float* bias, u32* refractory, u8* fired, i64* ring_ex, i64* ring_in) {
    u32 lo = 0, hi = n_pops;
    while (lo < hi) {
        u32 mid = (lo + hi) >> 1;
        if (pops[mid].end <= g) lo = mid + 1; else hi = mid;
    }
    if (lo == n_pops || pops[lo].first > g) return false;
    const Pop& p = pops[lo];
    u64 at = (u64)(t & (slots - 1)) * n + g;
    u32 id = base + g;
    if (p.kind == 4) {
        // A spike source: no membrane, no input (the model refuses any); the slot is consumed.
        ring_ex[at] = 0;
        ring_in[at] = 0;
        bool spike = scheduled(p.source, t, id - p.source.pop_first);
        fired[g] = spike ? 1 : 0;
        return spike;
    }
    i64 in_ex = ring_ex[at], in_in = ring_in[at];
    for (u32 i = p.src_first; i < p.src_end; i++) {
        const Src& src = srcs[i];
        if (id < src.first || id >= src.end) continue;
        u32 c[4] = {src.stream, id, (u32)t, (u32)(t >> 32)};
        philox(c, key0, key1);
        double mean = src.mean, eml = src.eml;
        if (src.rates) { mean = ((const double*)src.rates)[2 * (id - src.first)]; eml = ((const double*)src.rates)[2 * (id - src.first) + 1]; }
        i64 k = (i64)poisson(mean, eml, uniform_f64(c[0], c[1]), c[2], c[3]) * src.quantum;
        if (src.inhibitory) in_in += k; else in_ex += k;
    }
    const Cuba& c = p.cuba;
    float vv = v[g], ex = syn_ex[g], inh = syn_in[g];
    u32 r = refractory[g];
    // lif.rs, LifInput: bias + current, one f32 addition, where the bias is drawn per neuron.
    float current = p.bias_per_neuron ? __fadd_rn(bias[g], p.current) : p.current;
    float vi = vv;
    if (p.kind == 3) {
        // lif.rs, alpha_step: the membrane from the state at the start of the step, then
        // I = dI p21 + I p11 and dI = dI p11 + arriving e / tau_s, per receptor.
        const Alpha& a = p.alpha;
        float dex = dsyn_ex[g], din = dsyn_in[g];
        if (r == 0) vi = alpha_integrate(a, vv, ex, inh, dex, din, current);
        syn_ex[g] = flush_subnormal(__fadd_rn(__fmul_rn(dex, a.p21_ex), __fmul_rn(ex, a.p11_ex)));
        dsyn_ex[g] = __fadd_rn(flush_subnormal(__fmul_rn(dex, a.p11_ex)), __fmul_rn(from_fixed(in_ex), a.psc_ex));
        syn_in[g] = flush_subnormal(__fadd_rn(__fmul_rn(din, a.p21_in), __fmul_rn(inh, a.p11_in)));
        dsyn_in[g] = __fadd_rn(flush_subnormal(__fmul_rn(din, a.p11_in)), __fmul_rn(from_fixed(in_in), a.psc_in));
    } else {
        if (r == 0) vi = p.kind == 0 ? cuba_integrate(c, vv, ex, inh, current)
                       : p.kind == 1 ? coba_integrate(p.coba, vv, ex, inh, current)
                                     : coba_euler(p.coba, vv, ex, inh, current);
        syn_ex[g] = __fadd_rn(flush_subnormal(__fmul_rn(ex, c.p11_ex)), from_fixed(in_ex));
        syn_in[g] = __fadd_rn(flush_subnormal(__fmul_rn(inh, c.p11_in)), from_fixed(in_in));
    }
    ring_ex[at] = 0;
    ring_in[at] = 0;
    bool spike = vi >= c.v_th;
    v[g] = spike ? c.v_reset : vi;
    refractory[g] = spike ? c.refractory_steps : (r > 0 ? r - 1 : 0);
    fired[g] = spike ? 1 : 0;
    return spike;
}

extern "C" __global__ void __launch_bounds__(NEURON_BLOCK) neurons(const u64* step, const Pop* pops, u32 n_pops, const Src* srcs, u32 key0, u32 key1,
                                   u32 base, u32 n, u32 slots, float* v, float* syn_ex, float* syn_in, float* dsyn_ex,
                                   float* dsyn_in, const float* bias, u32* refractory, u8* fired, i64* ring_ex, i64* ring_in,
                                   u32* block_counts) {
    u32 g = blockIdx.x * blockDim.x + threadIdx.x;
    bool spike = g < n && neuron(g, *step, pops, n_pops, srcs, key0, key1, base, n, slots, v, syn_ex, syn_in, dsyn_ex, dsyn_in, bias,
                                 refractory, fired, ring_ex, ring_in);
    u32 count = __syncthreads_count(spike);
    if (threadIdx.x == 0) block_counts[blockIdx.x] = count;
}

// ---- spike compaction: ascending global ids, the same list the CPU exchange builds ----

// Exclusive scan of the block counts in one block of 1024 threads; the total is n_spikes.
// Each thread sums a chunk; warps scan their threads' sums with shuffles, warp 0 the warps'.
extern "C" __global__ void scan_counts(u32* block_counts, u32 blocks, u32* n_spikes) {
    __shared__ u32 warp_sums[32];
    u32 per = (blocks + 1023) / 1024;
    u32 lo = threadIdx.x * per, hi = min(lo + per, blocks);
    u32 sum = 0;
    for (u32 i = lo; i < hi; i++) sum += block_counts[i];
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, inclusive = sum;
    for (int d = 1; d < 32; d <<= 1) {
        u32 x = __shfl_up_sync(0xffffffffu, inclusive, d);
        if (lane >= d) inclusive += x;
    }
    if (lane == 31) warp_sums[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        u32 w = warp_sums[lane], total = w;
        for (int d = 1; d < 32; d <<= 1) {
            u32 x = __shfl_up_sync(0xffffffffu, total, d);
            if (lane >= d) total += x;
        }
        warp_sums[lane] = total - w;
        if (lane == 31) *n_spikes = total;
    }
    __syncthreads();
    u32 run = warp_sums[warp] + inclusive - sum;
    for (u32 i = lo; i < hi; i++) { u32 s = block_counts[i]; block_counts[i] = run; run += s; }
}

// The step's spike list (global ids: `base` + index), ascending, and its spike bits (`bits[w]`
// bit i for neuron 32w + i, what `deliver` pairs with plastic synapses; none where `bits` is
// null); also adds each spike to its
// neuron's count in every slot of `spike_counts` (`schedules` of them, n each: the
// `spike_count` column of structural plasticity, which systems/src/structural.rs counts the
// same on the CPU).
extern "C" __global__ void write_spikes(const u8* fired, u32 n, const u32* block_offsets, u32* spikes, u32* bits, u32* spike_counts,
                                        u32 schedules, u32 base) {
    __shared__ u32 warp_offsets[32];
    u32 g = blockIdx.x * blockDim.x + threadIdx.x;
    bool f = g < n && fired[g];
    u32 ballot = __ballot_sync(0xffffffffu, f);
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (bits && lane == 0 && g < n) bits[g / 32] = ballot;
    if (lane == 0) warp_offsets[warp] = __popc(ballot);
    __syncthreads();
    if (threadIdx.x == 0) {
        u32 run = block_offsets[blockIdx.x];
        for (u32 w = 0; w < blockDim.x / 32; w++) { u32 s = warp_offsets[w]; warp_offsets[w] = run; run += s; }
    }
    __syncthreads();
    if (f) {
        spikes[warp_offsets[warp] + __popc(ballot & ((1u << lane) - 1))] = base + g;
        for (u32 s = 0; s < schedules; s++) spike_counts[(u64)s * n + g] += 1;
    }
}

// ---- spikes across ranks (systems/src/cuda_ranks.rs): each rank packs its neurons' spike
// flags into bits, `words` per rank and step (the most any rank needs; unused bits 0); the
// ranks' bits are gathered rank after rank, every step or an epoch's steps at once; every rank
// compacts each step's into the same ascending list. ----

// bits[w] holds neurons 32w .. 32w + 31 of this rank, bit i for neuron 32w + i, at step
// *step's place in an epoch of `epoch_len` steps (`words` words each; epochs never cross a
// multiple of their length); also into `host_bits` where that is not null (the MPI path's
// mapped memory). Like write_spikes, adds each spike to its neuron's count in the `schedules`
// slots of spike_counts. In epochs, where it is the step's last launch, it also advances the
// clock as `record` does (`done` counts its finished blocks; null: not its part).
extern "C" __global__ void pack_fired(u64* step, u32 epoch_len, const u8* fired, u32 n, u32 words, u32* bits, u32* host_bits,
                                      u32* spike_counts, u32 schedules, u32* done) {
    u32 g = blockIdx.x * blockDim.x + threadIdx.x;
    bool f = g < n && fired[g];
    u32 ballot = __ballot_sync(0xffffffffu, f);
    u64 t = *step, at = (t % epoch_len) * words + g / 32;
    if ((threadIdx.x & 31) == 0 && g / 32 < words) {
        bits[at] = ballot;
        if (host_bits) host_bits[at] = ballot;
    }
    if (f) for (u32 s = 0; s < schedules; s++) spike_counts[(u64)s * n + g] += 1;
    if (!done) return;
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(done, 1) == gridDim.x - 1) {
            *done = 0;
            *step = t + 1;
        }
    }
}

// The gathered bits of one step: word w (of `total_words`) is word w % words of rank w / words,
// found at bits[(w / words) * rank_stride + w % words] (rank_stride: the words a rank sent).
__device__ __forceinline__ u32 gathered_word(const u32* bits, u32 w, u32 words, u32 rank_stride) {
    return bits[(u64)(w / words) * rank_stride + w % words];
}

// Spikes per block of 1024 words of the gathered bits.
extern "C" __global__ void count_bits(const u32* bits, u32 total_words, u32 words, u32 rank_stride, u32* block_counts) {
    __shared__ u32 warp_counts[32];
    u32 w = blockIdx.x * 1024 + threadIdx.x;
    u32 c = w < total_words ? __popc(gathered_word(bits, w, words, rank_stride)) : 0;
    for (int d = 16; d > 0; d >>= 1) c += __shfl_down_sync(0xffffffffu, c, d);
    if ((threadIdx.x & 31) == 0) warp_counts[threadIdx.x >> 5] = c;
    __syncthreads();
    if (threadIdx.x == 0) {
        u32 sum = 0;
        for (int i = 0; i < 32; i++) sum += warp_counts[i];
        block_counts[blockIdx.x] = sum;
    }
}

// The step's spike list from the gathered bits: rank w / words's neurons start at global id
// rank_first[w / words].
extern "C" __global__ void write_bit_spikes(const u32* bits, u32 total_words, u32 words, u32 rank_stride, const u32* rank_first,
                                            const u32* block_offsets, u32* spikes) {
    __shared__ u32 warp_offsets[32];
    u32 w = blockIdx.x * 1024 + threadIdx.x;
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u32 word = w < total_words ? gathered_word(bits, w, words, rank_stride) : 0;
    u32 c = __popc(word), inclusive = c;
    for (int d = 1; d < 32; d <<= 1) {
        u32 x = __shfl_up_sync(0xffffffffu, inclusive, d);
        if (lane >= d) inclusive += x;
    }
    if (lane == 31) warp_offsets[warp] = inclusive;
    __syncthreads();
    if (threadIdx.x == 0) {
        u32 run = block_offsets[blockIdx.x];
        for (int i = 0; i < 32; i++) { u32 s = warp_offsets[i]; warp_offsets[i] = run; run += s; }
    }
    __syncthreads();
    u32 at = warp_offsets[warp] + inclusive - c;
    u32 first = w < total_words ? rank_first[w / words] + (w % words) * 32 : 0;
    for (; word; word &= word - 1) spikes[at++] = first + __ffs(word) - 1;
}

// Rebuilds one per-synapse column of a block at a structural commit, as apply_plan
// (engine/src/structural.rs) does on the host: row r keeps its synapses but the pruned ones
// (positions pruned[pruned_ptr[r] .. pruned_ptr[r + 1]], ascending), in order, then gets
// grown[grown_ptr[r] .. grown_ptr[r + 1]]. A warp per row: the kept synapses of 32 positions
// are placed with one ballot, so reads and writes stay coalesced. `elem` is 2 or 4 bytes.
__device__ __forceinline__ void copy_elem(const u8* src, u64 i, u8* dst, u64 j, u32 elem) {
    if (elem == 2) ((u16*)dst)[j] = ((const u16*)src)[i];
    else ((u32*)dst)[j] = ((const u32*)src)[i];
}

__device__ __forceinline__ bool sorted_contains(const u32* a, u32 n, u32 x) {
    u32 lo = 0, hi = n;
    while (lo < hi) { u32 mid = (lo + hi) / 2; if (a[mid] < x) lo = mid + 1; else hi = mid; }
    return lo < n && a[lo] == x;
}

extern "C" __global__ void compact_rows(u32 rows, u32 elem, const u32* old_ptr, const u32* new_ptr, const u32* pruned,
                                        const u32* pruned_ptr, const u8* grown, const u32* grown_ptr, const u8* old_col, u8* new_col) {
    u32 lane = threadIdx.x & 31;
    u32 warps = gridDim.x * blockDim.x / 32;
    for (u32 r = (blockIdx.x * blockDim.x + threadIdx.x) / 32; r < rows; r += warps) {
        u32 out = new_ptr[r], end = old_ptr[r + 1];
        const u32* gone = pruned + pruned_ptr[r];
        u32 n_gone = pruned_ptr[r + 1] - pruned_ptr[r];
        for (u32 base = old_ptr[r]; base < end; base += 32) {
            u32 k = base + lane;
            bool keep = k < end && !sorted_contains(gone, n_gone, k);
            u32 ballot = __ballot_sync(0xffffffffu, keep);
            if (keep) copy_elem(old_col, k, new_col, out + __popc(ballot & ((1u << lane) - 1)), elem);
            out += __popc(ballot);
        }
        u32 g0 = grown_ptr[r], n_new = grown_ptr[r + 1] - g0;
        for (u32 i = lane; i < n_new; i += 32) copy_elem(grown, g0 + i, new_col, out + i, elem);
    }
}

// ---- structural planning (engine/src/structural.rs: plan_block, finish_device_plan) ----
// The device decides which synapses a plan prunes and which sources each target draws; the
// host draws the new synapses' delays and weights from where each target's stream stopped, so
// no device maths enters them. One synapse block at a time: plan_count and scan_counts give
// each shard-local target a bucket, plan_bucket fills the buckets with entries (key, position),
// unordered, plan_select decides per target; the host places each target's draws from how
// many it kept (systems/src/cuda.rs), and plan_regrow draws them.

// Incoming synapses per shard-local target.
extern "C" __global__ void plan_count(u32 n_syn, u64 target, u32 wide, u32* counts) {
    for (u32 k = blockIdx.x * blockDim.x + threadIdx.x; k < n_syn; k += gridDim.x * blockDim.x) atomicAdd(&counts[load_target(target, wide, k)], 1u);
}

// Pruning by weight alone (mode 0 of plan_select) needs no buckets: each synapse below `x` is
// pruned where it stands, and the others count toward their target's kept synapses.
extern "C" __global__ void plan_below(u32 n_syn, u64 target, u32 wide, u64 weight, u32 weight_f16, double x, u32 t0,
                                      u32* pruned_bits, u32* kept) {
    for (u32 k = blockIdx.x * blockDim.x + threadIdx.x; k < n_syn; k += gridDim.x * blockDim.x) {
        float w = fabsf(weight_f16 ? half_to_float(((const u16*)weight)[k]) : ((const float*)weight)[k]);
        if ((double)w < x) atomicOr(&pruned_bits[k >> 5], 1u << (k & 31));
        else atomicAdd(&kept[load_target(target, wide, k) - t0], 1u);
    }
}

// A synapse in its target's bucket: key and position in one 16-byte record, so that each
// scattered write touches one sector of memory (apart, they touched two).
struct __align__(16) Entry { u64 key; u32 pos, unused; };

// Every synapse into its target's bucket with its key: |w| as f32 bits, or (priority) the
// co-activity priority |w| x rate_pre x rate_post as f64 bits. Both are non-negative, so their
// bits order as their values do. A warp per row, which knows its source. `fill` counts each
// bucket's entries so far (zeroed by the host: see plan_memory in systems/src/cuda.rs).
extern "C" __global__ void plan_bucket(u32 rows, const u32* row_ptr, u64 target, u32 wide, u64 weight, u32 weight_f16,
                                       u32 priority, const u32* spike_counts, u32 source_first, u32 shard_first,
                                       double interval_s, const u32* offsets, u32* fill, Entry* entries) {
    u32 lane = threadIdx.x & 31;
    u32 warps = gridDim.x * blockDim.x / 32;
    for (u32 r = (blockIdx.x * blockDim.x + threadIdx.x) / 32; r < rows; r += warps) {
        double pre = priority ? __ddiv_rn((double)spike_counts[source_first + r], interval_s) : 0.0;
        for (u32 k = row_ptr[r] + lane; k < row_ptr[r + 1]; k += 32) {
            u32 t = load_target(target, wide, k);
            float w = fabsf(weight_f16 ? half_to_float(((const u16*)weight)[k]) : ((const float*)weight)[k]);
            u64 key = __float_as_uint(w);
            if (priority) {
                double post = __ddiv_rn((double)spike_counts[shard_first + t], interval_s);
                key = (u64)__double_as_longlong(__dmul_rn(__dmul_rn((double)w, pre), post));
            }
            entries[offsets[t] + atomicAdd(&fill[t], 1u)] = Entry{key, k, 0u};
        }
    }
}

// Decides for each target j in [t0, t1) (a thread block each) which synapses go, setting the
// bits of their positions, and how many stay (kept[j - t0]). mode 1: all but the `keep`
// largest |w|; mode 2: the round(x * n) lowest priorities; ties go to the earlier position. It
// finds the m-th smallest (key, position) by a radix select, 8 bits a pass (key_bits of key,
// then 32 of position), and stops at the pass whose digit's entries are all among the m; mode
// 1 orders by descending |w| (flipped keys). A bucket of at most `cached` entries is read once
// into shared memory (dynamic, `cached` entries) and every pass reads it there. 256 threads a
// block.
extern "C" __global__ void plan_select(u32 t0, u32 t1, const u32* offsets, const Entry* entries, u32 cached,
                                       u32 mode, double x, u32 keep, u32 key_bits, u32* pruned_bits, u32* kept) {
    extern __shared__ Entry cache[];
    __shared__ u32 hist[256], warp_sums[8];
    __shared__ u64 prefix_key;
    __shared__ u32 prefix_pos, remaining, done;
    u32 j = t0 + blockIdx.x;
    if (j >= t1) return;
    u32 b0 = offsets[j], n = offsets[j + 1] - b0;
    const Entry* e = entries + b0;
    if (n <= cached) {
        for (u32 i = threadIdx.x; i < n; i += blockDim.x) cache[i] = e[i];
        __syncthreads();
        e = cache;
    }
    bool flip = mode == 1;
    u32 m = flip ? min(keep, n) : min((u32)round(__dmul_rn(x, (double)n)), n);
    u64 tk = 0;
    u32 tp = 0;
    if (m > 0 && m < n) {
        if (threadIdx.x == 0) { prefix_key = 0; prefix_pos = 0; remaining = m; done = 0; }
        u64 key_mask = 0;
        u32 pos_mask = 0;
        u32 key_passes = key_bits / 8;
        for (u32 p = 0; p < key_passes + 4; p++) {
            bool in_key = p < key_passes;
            u32 shift = in_key ? key_bits - 8 * (p + 1) : 32 - 8 * (p - key_passes + 1);
            for (u32 b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
            __syncthreads();
            u64 pk = prefix_key;
            u32 pp = prefix_pos;
            for (u32 i = threadIdx.x; i < n; i += blockDim.x) {
                Entry en = e[i];
                u64 k = flip ? 0xffffffffull - en.key : en.key;
                if ((k & key_mask) == pk && (en.pos & pos_mask) == pp)
                    atomicAdd(&hist[in_key ? (u32)(k >> shift) & 255u : (en.pos >> shift) & 255u], 1u);
            }
            __syncthreads();
            // The digit where the count of smaller entries reaches `remaining`: a scan of the
            // 256 bins, a thread each, by warp shuffles.
            u32 h = hist[threadIdx.x], lane = threadIdx.x & 31, warp = threadIdx.x >> 5, incl = h;
            for (u32 o = 1; o < 32; o <<= 1) {
                u32 v = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += v;
            }
            if (lane == 31) warp_sums[warp] = incl;
            __syncthreads();
            for (u32 w = 0; w < warp; w++) incl += warp_sums[w];
            u32 rem = remaining;
            __syncthreads();
            if (h > 0 && incl - h < rem && incl >= rem) {
                remaining = rem - (incl - h);
                // Every entry of this digit is among the m: the threshold is the digit's
                // largest (key, position), whatever the lower bits.
                u32 all = incl == rem;
                done = all;
                u64 low_key = all ? (in_key ? (1ull << shift) - 1 : 0) : 0;
                u32 low_pos = all ? (in_key ? 0xffffffffu : (1u << shift) - 1) : 0;
                if (in_key) prefix_key |= ((u64)threadIdx.x << shift) | low_key;
                else prefix_pos |= (threadIdx.x << shift) | low_pos;
                if (all && in_key) prefix_pos = low_pos;
            }
            if (in_key) key_mask |= 255ull << shift;
            else pos_mask |= 255u << shift;
            __syncthreads();
            if (done) break;
        }
        tk = prefix_key;
        tp = prefix_pos;
    }
    // The m smallest are kept (mode 1) or pruned (mode 2).
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) {
        Entry en = e[i];
        u64 k = flip ? 0xffffffffull - en.key : en.key;
        bool smallest = m == n || (m > 0 && (k < tk || (k == tk && en.pos <= tp)));
        if (smallest != flip) atomicOr(&pruned_bits[en.pos >> 5], 1u << (en.pos & 31));
    }
    if (threadIdx.x == 0) kept[j - t0] = flip ? m : n - m;
}

struct Draws { u32 count, used; u64 block; };

// Each target's new sources, a warp per target, as draw_sources draws them from the target's
// Philox stream (rng.rs Stream::below: Lemire's multiply-shift with rejection): uniform over
// the source population, never the target itself without autapses, and without multapses
// never a source with a kept synapse to it nor one drawn already. The warp takes the stream's
// words 32 at a time, a lane each: every lane turns its word into a candidate and scans that
// source's row (the slow, random reads, side by side), then the candidates are taken in word
// order. Also writes where the stream stopped (the word after the last one used), for the host
// to draw delays and weights on.
extern "C" __global__ void plan_regrow(u32 t0, u32 t1, const u32* offsets, u32 multapses, u32 no_autapses, u32 source_size,
                                       u32 shard_first, u32 target_first, u32 key0, u32 key1, u32 stream, u64 first_block,
                                       const u32* row_ptr, u64 target, u32 wide, const u32* pruned_bits, u32* rows, Draws* draws) {
    u32 lane = threadIdx.x & 31;
    u32 i = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (i >= t1 - t0) return;
    u32 j = t0 + i, first = offsets[i], need = offsets[i + 1] - first;
    u32 post = shard_first + j - target_first;
    u32 threshold = (0u - source_size) % source_size;
    u64 used = 0;  // words of the stream consumed, a multiple of 32 until the last batch
    u32 got = 0;
    while (got < need) {
        u64 blk = first_block + (used + lane) / 4;
        u32 c[4] = {stream, post, (u32)blk, (u32)(blk >> 32)};
        philox(c, key0, key1);
        u32 q = lane & 3;
        u32 word = q == 0 ? c[0] : q == 1 ? c[1] : q == 2 ? c[2] : c[3];
        u64 m = (u64)word * source_size;
        u32 candidate = (u32)(m >> 32);
        bool ok = (u32)m >= threshold && !(no_autapses && candidate == post);
        if (ok && !multapses)
            for (u32 k = row_ptr[candidate]; k < row_ptr[candidate + 1]; k++)
                if (load_target(target, wide, k) == j && !((pruned_bits[k >> 5] >> (k & 31)) & 1u)) { ok = false; break; }
        u32 ballot = __ballot_sync(0xffffffffu, ok), last = 31;
        while (ballot != 0 && got < need) {
            u32 b = __ffs(ballot) - 1;
            ballot &= ballot - 1;
            u32 source = __shfl_sync(0xffffffffu, candidate, b);
            bool drawn = false;
            if (!multapses)
                for (u32 r = lane; r < got; r += 32) drawn |= rows[first + r] == source;
            if (__any_sync(0xffffffffu, drawn)) continue;
            if (lane == 0) rows[first + got] = source;
            __syncwarp();
            got++;
            last = b;
        }
        used += got == need ? last + 1 : 32;
    }
    // As Stream::position: the next block to generate, and the words used of the current one.
    if (lane == 0) draws[i] = Draws{need, used % 4 == 0 ? 4u : (u32)(used % 4), first_block + (used + 3) / 4};
}

// ---- STDP (stdp.rs) ----

__device__ __forceinline__ float clampf(float x, float lo, float hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

// ---- portable math (portable.rs): IEEE f64 add/sub/mul/div, floor and bits only, so the
// same bits as the CPU's; libm's powf differs between backends in its last bits ----

// ln of a positive, finite, normal x: x = 2^e m, m in [sqrt(1/2), sqrt(2)], ln m = 2 atanh(s),
// s = (m - 1) / (m + 1), series to s^19 / 19.
__device__ __forceinline__ double portable_ln(double x) {
    const double LN2_HI = __longlong_as_double(0x3fe62e42fee00000ll), LN2_LO = __longlong_as_double(0x3dea39ef35793c76ll);
    const double SQRT2 = __longlong_as_double(0x3ff6a09e667f3bcdll);
    long long bits = __double_as_longlong(x);
    long long e = ((bits >> 52) & 0x7ff) - 1023;
    double m = __longlong_as_double((bits & 0x000fffffffffffffll) | 0x3ff0000000000000ll);
    if (m > SQRT2) {
        m = __dmul_rn(m, 0.5);
        e += 1;
    }
    double s = __ddiv_rn(__dsub_rn(m, 1.0), __dadd_rn(m, 1.0));
    double z = __dmul_rn(s, s);
    double series = 1.0 / 19.0;
    series = __dadd_rn(1.0 / 17.0, __dmul_rn(z, series));
    series = __dadd_rn(1.0 / 15.0, __dmul_rn(z, series));
    series = __dadd_rn(1.0 / 13.0, __dmul_rn(z, series));
    series = __dadd_rn(1.0 / 11.0, __dmul_rn(z, series));
    series = __dadd_rn(1.0 / 9.0, __dmul_rn(z, series));
    series = __dadd_rn(1.0 / 7.0, __dmul_rn(z, series));
    series = __dadd_rn(1.0 / 5.0, __dmul_rn(z, series));
    series = __dadd_rn(1.0 / 3.0, __dmul_rn(z, series));
    double ln_m = __dmul_rn(2.0, __dadd_rn(s, __dmul_rn(s, __dmul_rn(z, series))));
    double ef = (double)e;
    return __dadd_rn(__dmul_rn(ef, LN2_HI), __dadd_rn(__dmul_rn(ef, LN2_LO), ln_m));
}

// e^y for |y| <= 700: y = k ln 2 + r, |r| <= 0.3466, Taylor series of e^r to r^13 / 13!.
__device__ __forceinline__ double portable_exp(double y) {
    const double LN2_HI = __longlong_as_double(0x3fe62e42fee00000ll), LN2_LO = __longlong_as_double(0x3dea39ef35793c76ll);
    const double INV_LN2 = __longlong_as_double(0x3ff71547652b82fell);
    double k = floor(__dadd_rn(__dmul_rn(y, INV_LN2), 0.5));
    double r = __dsub_rn(__dsub_rn(y, __dmul_rn(k, LN2_HI)), __dmul_rn(k, LN2_LO));
    double p = 1.0 / 6227020800.0;
    p = __dadd_rn(1.0 / 479001600.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 39916800.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 3628800.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 362880.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 40320.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 5040.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 720.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 120.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 24.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 6.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0 / 2.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0, __dmul_rn(r, p));
    p = __dadd_rn(1.0, __dmul_rn(r, p));
    return __dmul_rn(p, __longlong_as_double(((long long)k + 1023) << 52));
}

// w^mu for a weight w >= 0 (w <= 0 counts as 0) and 0 <= mu <= 1, rounded once to f32.
__device__ __forceinline__ float portable_powf_weight(float w, float mu) {
    double x = (double)w, y = (double)mu;
    if (x <= 0.0) return y == 0.0 ? 1.0f : 0.0f;
    return __double2float_rn(portable_exp(__dmul_rn(y, portable_ln(x))));
}

// POWER_LAW: whether the launch may meet a power-law rule (`deliver_full`); see `deliver`.
template <bool POWER_LAW>
__device__ __forceinline__ float potentiate(const Rule& r, float w, float x) {
    float dw = r.dependence == RULE_MULTIPLICATIVE ? __fmul_rn(__fmul_rn(r.a_plus, __fsub_rn(r.w_max, w)), x)
             : POWER_LAW && r.dependence == RULE_POWER_LAW ? __fmul_rn(__fmul_rn(r.a_plus, portable_powf_weight(w, r.mu)), x)
                                                   : __fmul_rn(__fmul_rn(r.a_plus, r.w_max), x);
    return clampf(__fadd_rn(w, dw), r.w_min, r.w_max);
}

__device__ __forceinline__ float depress(const Rule& r, float w, float y) {
    float dw = r.dependence == RULE_MULTIPLICATIVE ? __fmul_rn(__fmul_rn(r.a_minus, __fsub_rn(w, r.w_min)), y)
             : r.dependence == RULE_POWER_LAW      ? __fmul_rn(__fmul_rn(r.a_minus, w), y)
                                                   : __fmul_rn(__fmul_rn(r.a_minus, r.w_max), y);
    return clampf(__fsub_rn(w, dw), r.w_min, r.w_max);
}

__device__ __forceinline__ float decay(u64 table, u32 len, u32 steps) {
    return steps < len ? ((const float*)table)[steps] : 0.0f;
}

__device__ __forceinline__ float trace_value(float at_last, u32 last, u64 table, u32 len, u32 t) {
    return last == NEVER ? 0.0f : __fmul_rn(at_last, decay(table, len, t - last));
}

// ---- delivery: a warp (or part of one) per (spike, block) row; weights added in fixed point ----

// The first index of the ascending spike list holding an id >= `id`.
__device__ __forceinline__ u32 first_at_least(const u32* spikes, u32 count, u32 id) {
    u32 lo = 0, hi = count;
    while (lo < hi) {
        u32 mid = (lo + hi) >> 1;
        if (spikes[mid] < id) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// The delay of synapse s, in steps.
__device__ __forceinline__ u32 delay_of(const Block& b, const Syn& s) {
    return s.delay ? ((const u16*)s.delay)[s.i] : b.const_delay;
}

// Adds w to target j's input d steps after t.
__device__ __forceinline__ void add_to_ring(const Block& b, u32 slots, u32 n, u32 t, u32 d, u32 j, float w) {
    atomicAdd((u64*)&((i64*)b.ring)[(u64)((t + d) & (slots - 1)) * n + b.local_first + j], (u64)to_fixed(w));
}

// A plastic synapse s (target j, weight w as loaded) at a presynaptic spike at t whose source
// last fired at `tl` with trace `xl` (stdp.rs, somatic_synapse): potentiation by the target's spikes
// after tl (read from its history only if it fired since tl), depression by its trace,
// delivery, then pairing with a postsynaptic spike of this very step. Returns whether the
// history had lost spikes after tl.
template <bool POWER_LAW>
__device__ __forceinline__ bool somatic_synapse(const Block& b, const Rule& r, u32 slots, u32 n, u32 t, const Syn& s,
                                                u32 j, float w, u32 d, u32 tl, float xl, const u32* fired) {
    Post p = ((const Post*)b.post)[j];
    bool lost = false;
    if (tl != NEVER && p.last != NEVER && p.last > tl) {
        u32 len = b.history_len;
        const u32* hist = (const u32*)b.history + (u64)j * len;
        u32 held = min(p.count, len), slot = (p.count + len - 1) % len, pending = 0;
        while (pending < held && hist[slot] > tl) {
            pending++;
            slot = slot == 0 ? len - 1 : slot - 1;
        }
        for (; pending > 0; pending--) {
            slot = slot + 1 == len ? 0 : slot + 1;
            u32 tp = hist[slot];
            if (tp < t) w = potentiate<POWER_LAW>(r, w, __fmul_rn(xl, decay(r.pre_decay, r.pre_decay_len, tp - tl)));
        }
        lost = p.floor != NEVER && p.floor > tl;
    }
    w = depress(r, w, trace_value(p.trace, p.last, r.post_decay, r.post_decay_len, t));
    add_to_ring(b, slots, n, t, d, j, w);
    u32 local = b.local_first + j;
    if ((fired[local >> 5] >> (local & 31) & 1) && tl != NEVER) w = potentiate<POWER_LAW>(r, w, __fmul_rn(xl, decay(r.pre_decay, r.pre_decay_len, t - tl)));
    store_weight_at(b, s, w);
    return lost;
}

// The same synapse when the rule's delay d is dendritic (stdp.rs, dendritic_synapse): potentiation
// by the target's spikes tp with tl < tp + d <= t, depression by its trace at t - d of the spikes
// before t - d (the last spike's record, or a history entry and its trace if that spike is
// still on its way), delivery.
template <bool POWER_LAW>
__device__ __forceinline__ bool dendritic_synapse(const Block& b, const Rule& r, u32 slots, u32 n, u32 t, const Syn& s,
                                                  u32 j, float w, u32 d, u32 tl, float xl) {
    Post p = ((const Post*)b.post)[j];
    float y_at = p.trace;
    u32 y_last = p.last;
    bool lost = false;
    bool waiting = p.last != NEVER && p.last + d >= t;
    bool pending = tl != NEVER && p.last != NEVER && p.last + d > tl;
    if (waiting || pending) {
        u32 len = b.history_len;
        const u32* hist = (const u32*)b.history + (u64)j * len;
        const float* traces = (const float*)b.history_trace + (u64)j * len;
        u32 held = min(p.count, len), slot = (p.count + len - 1) % len, i = 0;
        while (i < held && hist[slot] + d > t) {
            i++;
            slot = slot == 0 ? len - 1 : slot - 1;
        }
        u32 arrived = slot, anchor = i, anchor_slot = slot;
        if (anchor < held && hist[anchor_slot] + d == t) {
            anchor++;
            anchor_slot = anchor_slot == 0 ? len - 1 : anchor_slot - 1;
        }
        if (waiting) {
            if (anchor < held) { y_at = traces[anchor_slot]; y_last = hist[anchor_slot]; }
            else { y_at = 0.0f; y_last = NEVER; }
            lost = lost || (anchor == held && p.floor != NEVER);
        }
        if (pending) {
            u32 count = 0, walk = arrived;
            while (i + count < held && hist[walk] + d > tl) {
                count++;
                walk = walk == 0 ? len - 1 : walk - 1;
            }
            for (; count > 0; count--) {
                walk = walk + 1 == len ? 0 : walk + 1;
                w = potentiate<POWER_LAW>(r, w, __fmul_rn(xl, decay(r.pre_decay, r.pre_decay_len, hist[walk] + d - tl)));
            }
            lost = lost || (p.floor != NEVER && p.floor + d > tl);
        }
    }
    w = depress(r, w, trace_value(y_at, y_last, r.post_decay, r.post_decay_len, t - d));
    add_to_ring(b, slots, n, t, d, j, w);
    store_weight_at(b, s, w);
    return lost;
}

// Synapses of a row a lane loads at once (see `deliver`).
#define UNROLL 4

// Strategy "presynaptic row per warp": rows are short (a neuron's synapses into one shard)
// and contiguous, so a warp reads them coalesced; atomics on 64-bit integers make the sum
// independent of the order in which warps run. Where a block's rows are shorter than a warp
// (more shards, or more GPUs, share a neuron's synapses), `row_lanes` lanes walk a row and a
// warp walks several, so that no lane idles for a whole row. Grid: y = block, x = thread blocks sharing
// that block's spikes. The spike list is sorted, so a block's sources are one contiguous
// range of it, found by binary search: no warp is spent on a spike the block does not hold.
// Synapse k of a row whose first `cut` synapses (from `lo`) are in the row cache from `base`.
__device__ __forceinline__ Syn locate(const Block& b, u32 k, u32 lo, u32 cut, u64 base) {
    return k < cut ? Syn{b.cache_target, b.cache_delay, b.cache_weight, base + (k - lo)} : own(b, k);
}

// `cache_reads` counts the synapses read from row caches ([0]) and from host memory ([1]).
// `deliver` is instantiated twice: FULL adds the rules NEST's benchmarks use, the power law
// (an f64 w^mu inlined into every unrolled synapse) and the dendritic timing. Without them
// `deliver` fits in 64 registers (4 thread blocks of 256 a multiprocessor); with them it needs
// about 90 (2 blocks), which, when every network launched it, slowed them all by 10-16 %. The
// host launches `deliver_full` only for networks with such a rule; scripts/check-kernels.py
// holds both to their register budgets. `map` gives each thread block its synapse block, its
// slice of that block's spikes and the block's slices (device.rs, deliver_map: thread blocks
// spread by the blocks' synapses).
template <bool FULL>
__device__ __forceinline__ void deliver_rows(const u64* step, u32 lag, const u32* spikes, const u32* n_spikes, const Block* blocks,
                                   const uint4* map, const Rule* rules, u32 n, u32 slots, const u32* fired,
                                   u32 stdp_enabled, u64* lost_pairings, u64* cache_reads) {
    __shared__ Block b;
    __shared__ Rule r;
    __shared__ u32 range[2];
    const uint4 m = map[blockIdx.x];
    // Everything waits at the barrier for this prologue, a chain of dependent loads; three warps
    // share it so that the two searches and the descriptor's copy overlap.
    const Block& own = blocks[m.x];
    if (threadIdx.x == 0) {
        b = own;
        if (own.rule != NEVER) r = rules[own.rule];
    } else if (threadIdx.x == 32) {
        range[0] = first_at_least(spikes, *n_spikes, own.source_first);
    } else if (threadIdx.x == 64) {
        range[1] = first_at_least(spikes, *n_spikes, own.source_first + own.source_size);
    }
    __syncthreads();
    u32 t = (u32)*step - lag;
    u32 group = b.row_lanes, lane = threadIdx.x & (group - 1), per_block = blockDim.x / group, groups = m.z * per_block;
    bool plastic = b.rule != NEVER && stdp_enabled;
    const u32* row_ptr = (const u32*)b.row_ptr;
    u32 lost = 0;
    u64 from_cache = 0, from_host = 0;
    // Work item = (spike, piece): `split` groups walk a row, piece p the synapses from
    // p x group x UNROLL on, every split x group x UNROLL (device.rs, row_split).
    u32 split = b.row_split, stride = split * group * UNROLL, items = (range[1] - range[0]) * split;
    for (u32 item = m.y * per_block + threadIdx.x / group; item < items; item += groups) {
        u32 s = range[0] + item / split, piece = item % split;
        u32 row = spikes[s] - b.source_first;
        u32 lo = row_ptr[row], hi = row_ptr[row + 1];
        u32 slot = b.cache_row ? ((const u32*)b.cache_row)[row] : NEVER;
        u32 cut = slot == NEVER ? lo : lo + min(hi - lo, b.cache_len);
        u64 base = (u64)slot * b.cache_len;
        if (b.cache_row && lane == 0 && piece == 0) { from_cache += cut - lo; from_host += hi - cut; }
        u32 tl = plastic ? ((const u32*)r.pre_last)[row] : NEVER;
        float xl = plastic ? ((const float*)r.pre_trace)[row] : 0.0f;
        // Each lane loads the targets, weights and delays of UNROLL synapses before using any,
        // so that a warp keeps all of them in flight: a row is a dependent chain of loads
        // (spike, row pointers, synapses), each a round trip to memory, or over the bus for a
        // row in mapped host memory (the host tier, engine/src/device.rs); a delay loaded beside
        // its atomic add would wait a round trip more per synapse. Synapses are independent, so
        // the order of their updates and atomic adds changes nothing.
        for (u32 k0 = lo + piece * group * UNROLL + lane; k0 < hi; k0 += stride) {
            u32 jd[UNROLL];  // target | delay << 22 (MAX_SHARD_NEURONS, MAX_DELAY_STEPS): registers are scarce
            float w[UNROLL];
#pragma unroll
            for (u32 u = 0; u < UNROLL; u++) {
                u32 k = k0 + group * u;
                if (k < hi) {
                    Syn at = locate(b, k, lo, cut, base);
                    jd[u] = load_target(at.target, b.target_wide, at.i) | delay_of(b, at) << 22;
                    w[u] = load_weight_at(b, at);
                }
            }
#pragma unroll
            for (u32 u = 0; u < UNROLL; u++) {
                u32 k = k0 + group * u;
                if (k >= hi) break;
                Syn at = locate(b, k, lo, cut, base);
                u32 j = jd[u] & 0x3fffffu, d = jd[u] >> 22;
                if (FULL && plastic && r.dendritic) lost += dendritic_synapse<FULL>(b, r, slots, n, t, at, j, w[u], d, tl, xl);
                else if (plastic) lost += somatic_synapse<FULL>(b, r, slots, n, t, at, j, w[u], d, tl, xl, fired);
                else add_to_ring(b, slots, n, t, d, j, w[u]);
            }
        }
    }
    if (lost) atomicAdd(lost_pairings, (u64)lost);
    if (from_cache) atomicAdd(&cache_reads[0], from_cache);
    if (from_host) atomicAdd(&cache_reads[1], from_host);
}

extern "C" __global__ void deliver(const u64* step, u32 lag, const u32* spikes, const u32* n_spikes, const Block* blocks,
                                   const uint4* map, const Rule* rules, u32 n, u32 slots, const u32* fired,
                                   u32 stdp_enabled, u64* lost_pairings, u64* cache_reads) {
    deliver_rows<false>(step, lag, spikes, n_spikes, blocks, map, rules, n, slots, fired, stdp_enabled, lost_pairings, cache_reads);
}

extern "C" __global__ void deliver_full(const u64* step, u32 lag, const u32* spikes, const u32* n_spikes, const Block* blocks,
                                        const uint4* map, const Rule* rules, u32 n, u32 slots, const u32* fired,
                                        u32 stdp_enabled, u64* lost_pairings, u64* cache_reads) {
    deliver_rows<true>(step, lag, spikes, n_spikes, blocks, map, rules, n, slots, fired, stdp_enabled, lost_pairings, cache_reads);
}

// ---- the row cache of blocks in host memory (engine/src/row_cache.rs) ----

// Spikes per neuron since the cache last read them: what ranks the rows.
extern "C" __global__ void count_sources(const u32* spikes, const u32* n_spikes, u32* counts) {
    u32 count = *n_spikes;
    for (u32 s = blockIdx.x * blockDim.x + threadIdx.x; s < count; s += gridDim.x * blockDim.x) counts[spikes[s]] += 1;
}

// A warp per (row, slot) pair of block `b`. `mode` 0 copies the row's first cache_len synapses
// from the block's columns into the slot and points the row at it; otherwise bit 1 copies the
// slot's weights back to the block's columns (the only column steps write), and bit 2 points
// the row back at them. Targets and delays never change, so they never go back.
extern "C" __global__ void move_rows(Block b, const u32* rows, const u32* slots, u32 count, u32 mode) {
    u32 lane = threadIdx.x & 31, warps = gridDim.x * (blockDim.x >> 5);
    for (u32 p = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); p < count; p += warps) {
        u32 row = rows[p], slot = slots[p];
        u32 lo = ((const u32*)b.row_ptr)[row], len = min(((const u32*)b.row_ptr)[row + 1] - lo, b.cache_len);
        u64 at = (u64)slot * b.cache_len;
        for (u32 i = lane; i < len; i += 32) {
            if (mode == 0) {
                if (b.target_wide) ((u32*)b.cache_target)[at + i] = ((const u32*)b.target)[lo + i];
                else ((u16*)b.cache_target)[at + i] = ((const u16*)b.target)[lo + i];
                if (b.delay) ((u16*)b.cache_delay)[at + i] = ((const u16*)b.delay)[lo + i];
            }
            if (mode == 0 || (mode & 1)) {
                u64 from = mode == 0 ? b.weight : b.cache_weight, to = mode == 0 ? b.cache_weight : b.weight;
                u64 src = mode == 0 ? lo + i : at + i, dst = mode == 0 ? at + i : lo + i;
                if (b.weight_f16) ((u16*)to)[dst] = ((const u16*)from)[src];
                else ((u32*)to)[dst] = ((const u32*)from)[src];
            }
        }
        if (lane == 0 && (mode == 0 || (mode & 2))) ((u32*)b.cache_row)[row] = mode == 0 ? slot : NEVER;
    }
}

// Postsynaptic bookkeeping of plastic blocks (grid y = plastic block): trace and spike
// history of every spiking target, found as a range of the sorted spike list.
// `post_spikes` and `pre_spikes` run at the start of the next step (`lag` 1: the clock has
// moved on), beside the exchange of its spikes (systems/src/cuda.rs, `late_stdp`), or in an
// epoch's replay after each step's delivery (`lag`: the steps since).
extern "C" __global__ void post_spikes(const u64* step, u32 lag, const u32* spikes, const u32* n_spikes, const Block* blocks,
                                       const u32* plastic_blocks, const Rule* rules) {
    const Block& b = blocks[plastic_blocks[blockIdx.y]];
    const Rule& r = rules[b.rule];
    u32 from = max(b.shard_first, r.target_first), to = min(b.shard_first + b.shard_size, r.target_first + r.target_size);
    if (from >= to) return;
    u32 t = (u32)*step - lag, count = *n_spikes;
    u32 lo = first_at_least(spikes, count, from), hi = first_at_least(spikes, count, to);
    for (u32 s = lo + blockIdx.x * blockDim.x + threadIdx.x; s < hi; s += gridDim.x * blockDim.x) {
        u32 j = spikes[s] - b.shard_first;
        Post* at = (Post*)b.post + j;
        Post p = *at;
        p.trace = r.nearest ? 1.0f : __fadd_rn(trace_value(p.trace, p.last, r.post_decay, r.post_decay_len, t), 1.0f);
        p.last = t;
        u32* hist = (u32*)b.history + (u64)j * b.history_len;
        u32 slot = p.count % b.history_len;
        if (p.count >= b.history_len) p.floor = hist[slot];
        hist[slot] = t;
        if (b.history_trace) ((float*)b.history_trace)[(u64)j * b.history_len + slot] = p.trace;
        p.count += 1;
        *at = p;
    }
}

// Health check of neuron state (engine/src/health.rs): counts non-finite values.
// dsyn_ex, dsyn_in: lif_psc_alpha's second variables, or null where no population has them.
extern "C" __global__ void state_outside(const float* v, const float* syn_ex, const float* syn_in, const float* dsyn_ex,
                                         const float* dsyn_in, u32 n, u32* outside) {
    u32 found = 0;
    for (u32 g = blockIdx.x * blockDim.x + threadIdx.x; g < n; g += gridDim.x * blockDim.x) {
        found += !isfinite(v[g]) + !isfinite(syn_ex[g]) + !isfinite(syn_in[g]);
        if (dsyn_ex) found += !isfinite(dsyn_ex[g]) + !isfinite(dsyn_in[g]);
    }
    if (found) atomicAdd(outside, found);
}

// Health check of plastic weights (engine/src/health.rs), grid y = plastic block: counts the
// weights outside their rule's bounds, both bounds rounded to the stored type as on the host.
extern "C" __global__ void weights_outside(const Block* blocks, const u32* plastic_blocks, const Rule* rules, u32* outside) {
    const Block& b = blocks[plastic_blocks[blockIdx.y]];
    const Rule& r = rules[b.rule];
    float lo = r.w_min, hi = r.w_max;
    if (b.weight_f16) { lo = half_to_float(float_to_half(lo)); hi = half_to_float(float_to_half(hi)); }
    u32 len = ((const u32*)b.row_ptr)[b.source_size], found = 0;
    for (u32 k = blockIdx.x * blockDim.x + threadIdx.x; k < len; k += gridDim.x * blockDim.x) {
        float w = load_weight(b, k);
        found += !(w >= lo && w <= hi);
    }
    if (found) atomicAdd(outside, found);
}

// Presynaptic traces count the spikes of step *step - lag (after every row has read them).
extern "C" __global__ void pre_spikes(const u64* step, u32 lag, const u32* spikes, const u32* n_spikes, const Rule* rules, u32 n_rules) {
    u32 t = (u32)*step - lag;
    u64 pairs = (u64)*n_spikes * n_rules;
    for (u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x; p < pairs; p += (u64)gridDim.x * blockDim.x) {
        const Rule& r = rules[p % n_rules];
        u32 g = spikes[p / n_rules];
        if (g < r.source_first || g >= r.source_first + r.source_size) continue;
        u32 i = g - r.source_first;
        float* at = (float*)r.pre_trace;
        u32* last = (u32*)r.pre_last;
        at[i] = r.nearest ? 1.0f : __fadd_rn(trace_value(at[i], last[i], r.pre_decay, r.pre_decay_len, t), 1.0f);
        last[i] = t;
    }
}

// ---- recording: this step's spikes and due probes into mapped, pinned host memory ----

// `out` is slot (t % staging_slots) of the staging area, t = *step - lag: [n_spikes, ids ...]
// then probe values. Only the bytes of actual spikes cross the bus. `what` picks the parts:
// RECORD_SPIKES, RECORD_STATE (probes of neuron state), RECORD_WEIGHTS (weight
// probes, and NaN for sites another GPU holds) and RECORD_ADVANCE: the last block to finish advances the clock
// (`done` counts finished blocks), after every block has read it, so no later kernel of the
// step reads the step after. A step records everything and advances at its end; in epochs
// across ranks `pack_fired` advances the clock, a record launch after it samples the state
// (lag 1), and the epoch's replay records its spikes and weights (systems/src/cuda.rs,
// `launch_replay`).
#define RECORD_SPIKES 1u
#define RECORD_STATE 2u
#define RECORD_WEIGHTS 4u
#define RECORD_ADVANCE 8u
extern "C" __global__ void record(u64* step, u32 lag, u32 what, const u32* spikes, const u32* n_spikes, u32* staging, u32 slot_words,
                                  u32 staging_slots, u32 n_max, const Probe* probes, u32 n_probes, const Block* blocks,
                                  u32* done) {
    u64 now = *step, t = now - lag;
    u32* out = staging + (u64)(t % staging_slots) * slot_words;
    u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x, threads = (u64)gridDim.x * blockDim.x;
    if (what & RECORD_SPIKES) {
        u32 count = *n_spikes;
        if (tid == 0) out[0] = count;
        for (u64 k = tid; k < count; k += threads) out[1 + k] = spikes[k];
    }
    float* values = (float*)(out + 1 + n_max);
    for (u64 k = tid; k < n_probes; k += threads) {
        const Probe& p = probes[k];
        if (t % p.interval_steps != 0 || !(what & (p.kind == 0 ? RECORD_STATE : RECORD_WEIGHTS))) continue;
        float value;
        if (p.kind == 0) value = ((const float*)p.source)[p.index];
        else if (p.kind == 1) value = load_weight(*(const Block*)p.source, p.index);
        else value = __int_as_float(0x7fc00000);  // NaN, as the CPU's f32::NAN
        values[k] = value;
    }
    if (!(what & RECORD_ADVANCE)) return;
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(done, 1) == gridDim.x - 1) {
            *done = 0;
            *step = now + 1;
        }
    }
}


// ---- bandwidth reference: a plain device-to-device copy, the ceiling the benchmarks quote ----
extern "C" __global__ void copy_words(const uint4* src, uint4* dst, u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) dst[i] = src[i];
}
