/* Fused CPU kernels of compress's integer path (compiled on first use by compress/quant/kernels/ckernels.py).
 *
 * Every function does, element by element and in the same order, the float64 operations that the
 * PyTorch code of the wrappers does one tensor pass at a time: int -> double conversions, one
 * multiply, one subtract, round half to even (nearbyint), clamps, one divide, double -> float.
 * IEEE-754 makes each of them exact-rounded, so the results are the same bits; the build turns off
 * FMA contraction and fast-math so that the compiler cannot merge or reorder them.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* fc's exact accumulator -> output code, as LinearQuantWrapper. All arrays are always given (zeros or
 * +-inf bounds where the wrapper skips a step: x - 0.0 == x and max(x, -inf) == x bit for bit), so the
 * inner loop has no branches and vectorizes. The int32 sum cannot overflow: the caller checked the bound. */
typedef struct {
    const int32_t *mm;  /* [M, N] torch._int_mm products */
    const int8_t *a8;   /* [M, K] the shifted int8 inputs (for their row sums) */
    int64_t M, N, K;
    const int32_t *cw;  /* [N] weight-side zero-point terms (zeros when none) */
    const int32_t *cst; /* [N] constant per column: input zero point, bias (zeros when none) */
    double acc_lo, acc_hi, relu_lo; /* accumulator clamp (+-inf when none), 0 or -inf for ReLU */
    const double *r;    /* [N] requantization factors */
    double zp, qmin, qmax;
} Requant;

static inline int32_t row_sum(const Requant *p, int64_t m) {
    int32_t s = 0;
    const int8_t *a = p->a8 + m * p->K;
    for (int64_t k = 0; k < p->K; k++) s += a[k];
    return s;
}

/* The output code (a double holding an integer) of an exact accumulator a: clamps, then round(a * r - zp), clamp.
 * Scalars only, so that every caller's loop keeps its struct fields in registers and vectorizes. */
static inline double requant_value(double a, double lo, double hi, double rlo, double r, double zp, double qmin,
                                   double qmax) {
    a = a < lo ? lo : a;
    a = a > hi ? hi : a;
    a = a < rlo ? rlo : a;
    double y = nearbyint(a * r - zp);
    y = y < qmin ? qmin : y;
    return y > qmax ? qmax : y;
}

/* codes[n] (doubles holding integers) of row m. */
static inline void requant_row(const Requant *p, int64_t m, double *restrict codes) {
    const int32_t *restrict mm = p->mm + m * p->N;
    const int32_t *restrict cw = p->cw, *restrict cst = p->cst;
    const double *restrict r = p->r;
    const int32_t rows = row_sum(p, m);
    const double lo = p->acc_lo, hi = p->acc_hi, rlo = p->relu_lo, zp = p->zp, qmin = p->qmin, qmax = p->qmax;
    for (int64_t n = 0; n < p->N; n++)
        codes[n] = requant_value((double)(mm[n] + rows * cw[n] + cst[n]), lo, hi, rlo, r[n], zp, qmin, qmax);
}

/* Dequantized float32 outputs: (code + out_zp) / out_scale, rounded once to float. scratch: [N].
 * lut (or NULL): that value per code, lut[code - qmin], computed once by the caller with the same float64
 * operations; a lookup instead of an add, a divide and a conversion per output (wide decoders). */
void requant_values_f32(const Requant *p, double out_zp, double out_scale, const float *lut, float *restrict out,
                        double *restrict scratch) {
    const double qmin = p->qmin;
    for (int64_t m = 0; m < p->M; m++) {
        requant_row(p, m, scratch);
        float *restrict o = out + m * p->N;
        if (lut) {
            for (int64_t n = 0; n < p->N; n++) o[n] = lut[(int32_t)(scratch[n] - qmin)];
        } else {
            for (int64_t n = 0; n < p->N; n++) o[n] = (float)((scratch[n] + out_zp) / out_scale);
        }
    }
}

/* Integer outputs code * mul + offs[n] (the fused LSTM loop's gate-table base). scratch: [N]. */
void requant_affine_i32(const Requant *p, int32_t mul, const int32_t *restrict offs, int32_t *restrict out,
                        double *restrict scratch) {
    for (int64_t m = 0; m < p->M; m++) {
        requant_row(p, m, scratch);
        int32_t *restrict o = out + m * p->N;
        for (int64_t n = 0; n < p->N; n++) o[n] = (int32_t)scratch[n] * mul + offs[n];
    }
}

/* Output codes minus qmin as bytes (the fused LSTM loop's fc_gate_x codes). scratch: [N]. */
void requant_codes_u8(const Requant *p, uint8_t *restrict out, double *restrict scratch) {
    const double qmin = p->qmin;
    for (int64_t m = 0; m < p->M; m++) {
        requant_row(p, m, scratch);
        uint8_t *restrict o = out + m * p->N;
        for (int64_t n = 0; n < p->N; n++) o[n] = (uint8_t)(int32_t)(scratch[n] - qmin);
    }
}

/* Input codes clamp(round(x * scale - zp)) - shift as int8, from float32 inputs (the wrapper's _codes). */
void quantize_i8(const float *restrict x, int64_t count, double scale, double zp, double qmin, double qmax,
                 int32_t shift, int8_t *restrict out) {
    for (int64_t i = 0; i < count; i++) {
        double y = nearbyint((double)x[i] * scale - zp);
        y = y < qmin ? qmin : y;
        y = y > qmax ? qmax : y;
        out[i] = (int8_t)((int32_t)y - shift);
    }
}

/* An element-wise module's fake quantization (FakeQuantWrapper): float32 outputs -> codes on the output grid
 * -> float32 values: x * scale (- zp when sub_zp), round half to even, clamp, (+ zp) / out_scale. */
void fake_quant_f32(const float *restrict x, int64_t count, double scale, double zp, int32_t sub_zp, double qmin,
                    double qmax, double out_scale, float *restrict out) {
    const double sub = sub_zp ? zp : 0.0;
    for (int64_t i = 0; i < count; i++) {
        double y = (double)x[i] * scale;
        if (sub_zp) y = y - sub;
        y = nearbyint(y);
        y = y < qmin ? qmin : y;
        y = y > qmax ? qmax : y;
        out[i] = (float)((y + zp) / out_scale);
    }
}

/* Rows of a quantized embedding as float32 (EmbeddingQuantWrapper): (float)(code / scale), codes int8 or (wide)
 * int32, one scale per row (per_row) or one for all. Returns -1, having written nothing, when an index is out of
 * range. */
int32_t embedding_rows_f32(const void *codes, int32_t wide, int64_t V, int64_t D, const double *restrict scale,
                           int32_t per_row, const int64_t *restrict idx, int64_t n, float *restrict out) {
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= V) return -1;
    for (int64_t i = 0; i < n; i++) {
        const double s = scale[per_row ? idx[i] : 0];
        float *restrict o = out + i * D;
        if (wide) {
            const int32_t *restrict row = (const int32_t *)codes + idx[i] * D;
            for (int64_t d = 0; d < D; d++) o[d] = (float)((double)row[d] / s);
        } else {
            const int8_t *restrict row = (const int8_t *)codes + idx[i] * D;
            for (int64_t d = 0; d < D; d++) o[d] = (float)((double)row[d] / s);
        }
    }
    return 0;
}

/* One step of the fused LSTM loop (compress/quant/fused/lstm.py) after fc_gate_h's _int_mm. */
typedef struct {
    Requant rq;  /* fc_gate_h: mm [B, 4H], a8 [B, H] (overwritten with the next step's inputs) */
    int64_t B, H, n_h, n_c, n_g, n_mi;
    const uint8_t *x;      /* [T, B, 4H] fc_gate_x codes minus qmin */
    const int32_t *goff;   /* [4H] gate * n_x * n_h - (fc_gate_h qmin): the gate table's block and shift */
    const uint8_t *gate, *mulf, *muli, *cell, *hid; /* the tables as bytes: 4x less cache than int32 */
    const int8_t *h_in;
    const float *h_values; /* dequantized hidden value per code */
    int32_t *c;            /* [B, H] cell-state codes, updated */
    int32_t *h;            /* [B, H] hidden codes, updated */
    float *out;            /* [T, B, H] hidden values */
    double *codes;         /* [4H] scratch */
    int32_t *gates;        /* [4H] scratch */
    float *c_out;          /* [T, B, H] cell-state values, or NULL (the one-step stack returns them) */
    const float *c_values; /* dequantized cell-state value per code */
} LstmStep;

void lstm_step(const LstmStep *p, int64_t t) {
    const int64_t B = p->B, H = p->H, G = 4 * H, n_h = p->n_h;
    const uint8_t *restrict x = p->x + t * B * G;
    float *restrict out = p->out + t * B * H;
    int8_t *restrict a8 = (int8_t *)p->rq.a8;
    int32_t *restrict gates = p->gates;
    int32_t *restrict idx = (int32_t *)p->codes; /* [4H] doubles of scratch: room for 4H int32 indices */
    const int32_t *restrict goff = p->goff, *restrict cw = p->rq.cw, *restrict cst = p->rq.cst;
    const double *restrict r = p->rq.r;
    const double lo = p->rq.acc_lo, hi = p->rq.acc_hi, rlo = p->rq.relu_lo, zp = p->rq.zp;
    const double qmin = p->rq.qmin, qmax = p->rq.qmax;
    const int32_t nh = (int32_t)n_h;
    const uint8_t *restrict gate = p->gate, *restrict mulf = p->mulf, *restrict muli = p->muli;
    const uint8_t *restrict cell = p->cell, *restrict hid = p->hid;
    const int8_t *restrict h_in = p->h_in;
    const float *restrict h_values = p->h_values;
    const int64_t n_c = p->n_c, n_g = p->n_g, n_mi = p->n_mi;
    float *restrict c_out = p->c_out ? p->c_out + t * B * H : NULL;
    const float *restrict c_values = p->c_values;
    for (int64_t b = 0; b < B; b++) {
        /* Gate-table indices from fc_gate_h's codes in one vectorized pass (reads row b of a8 before it is
         * overwritten below), then the lookups: 20% faster than storing the codes first (measured, Zen 4). */
        const int32_t *restrict mm = p->rq.mm + b * G, rows = row_sum(&p->rq, b);
        for (int64_t n = 0; n < G; n++) {
            const double y = requant_value((double)(mm[n] + rows * cw[n] + cst[n]), lo, hi, rlo, r[n], zp, qmin, qmax);
            idx[n] = goff[n] + x[b * G + n] * nh + (int32_t)y;
        }
        for (int64_t n = 0; n < G; n++) gates[n] = gate[idx[n]];
        int32_t *restrict c = p->c + b * H, *restrict hh = p->h + b * H;
        for (int64_t j = 0; j < H; j++) {
            const int32_t i = gates[j], f = gates[H + j], g = gates[2 * H + j], o = gates[3 * H + j];
            const int32_t cn = cell[mulf[f * n_c + c[j]] * n_mi + muli[i * n_g + g]];
            const int32_t h = hid[o * n_c + cn];
            c[j] = cn;
            hh[j] = h;
            out[b * H + j] = h_values[h];
            a8[b * H + j] = h_in[h];
        }
        if (c_out)
            for (int64_t j = 0; j < H; j++) c_out[b * H + j] = c_values[c[j]];
    }
}

/* One step of the fused GRU loop (compress/quant/fused/gru.py) after fc_gate_h's _int_mm. Column blocks of
 * fc_gate_x / fc_gate_h: reset r, update z, new n. */
typedef struct {
    Requant rq;             /* fc_gate_h: mm [B, 3H], a8 [B, H] (overwritten with the next step's inputs) */
    int64_t B, H, n_h, n_nr, n_n, n_hs, n_zh; /* code counts: fc_gate_h, r*h_n, n, h state, z*h */
    const uint8_t *x;       /* [T, B, 3H] fc_gate_x codes minus qmin */
    const int32_t *goff;    /* [2H] gate * n_x * n_h - (fc_gate_h qmin) for the r and z blocks */
    double h_qmin;          /* fc_gate_h's qmin (its n-block codes index the reset product table) */
    const uint8_t *rz, *new_reset, *new_gate, *keep_new, *keep_old, *hid; /* tables as bytes */
    const int8_t *h_in;
    const float *h_values;
    int32_t *h;             /* [B, H] hidden codes, updated */
    float *out;             /* [T, B, H] hidden values */
    double *codes;          /* [3H] scratch */
} GruStep;

void gru_step(const GruStep *p, int64_t t) {
    const int64_t B = p->B, H = p->H, G = 3 * H, n_h = p->n_h, n_nr = p->n_nr, n_n = p->n_n, n_zh = p->n_zh;
    const int64_t n_hs = p->n_hs;
    const uint8_t *restrict x = p->x + t * B * G;
    float *restrict out = p->out + t * B * H;
    int8_t *restrict a8 = (int8_t *)p->rq.a8;
    int32_t *restrict idx = (int32_t *)p->codes; /* [3H] doubles of scratch: room for 3H int32 indices */
    const int32_t *restrict goff = p->goff, *restrict cw = p->rq.cw, *restrict cst = p->rq.cst;
    const double *restrict r_q = p->rq.r;
    const double lo = p->rq.acc_lo, hi = p->rq.acc_hi, rlo = p->rq.relu_lo, zp = p->rq.zp;
    const double qmin = p->rq.qmin, qmax = p->rq.qmax;
    const uint8_t *restrict rz = p->rz, *restrict new_reset = p->new_reset, *restrict new_gate = p->new_gate;
    const uint8_t *restrict keep_new = p->keep_new, *restrict keep_old = p->keep_old, *restrict hid = p->hid;
    const int8_t *restrict h_in = p->h_in;
    const float *restrict h_values = p->h_values;
    const int32_t h_qmin = (int32_t)p->h_qmin;
    for (int64_t b = 0; b < B; b++) {
        /* One vectorized pass: the r and z blocks' gate-table indices, the n block's codes minus qmin (reads row b
         * of a8 before it is overwritten below); then the lookups (as in lstm_step). */
        const uint8_t *restrict xb = x + b * G;
        const int32_t *restrict mm = p->rq.mm + b * G, rows = row_sum(&p->rq, b), nh = (int32_t)n_h;
        for (int64_t n = 0; n < 2 * H; n++) {
            const double y = requant_value((double)(mm[n] + rows * cw[n] + cst[n]), lo, hi, rlo, r_q[n], zp, qmin, qmax);
            idx[n] = goff[n] + xb[n] * nh + (int32_t)y;
        }
        for (int64_t n = 2 * H; n < G; n++)
            idx[n] = (int32_t)requant_value((double)(mm[n] + rows * cw[n] + cst[n]), lo, hi, rlo, r_q[n], zp, qmin, qmax) -
                     h_qmin;
        int32_t *restrict hh = p->h + b * H;
        for (int64_t j = 0; j < H; j++) {
            const int32_t r = rz[idx[j]];
            const int32_t z = rz[idx[H + j]];
            const int32_t nr = new_reset[r * n_h + idx[2 * H + j]];
            const int32_t n = new_gate[xb[2 * H + j] * n_nr + nr];
            const int32_t h = hid[keep_new[z * n_n + n] * n_zh + keep_old[z * n_hs + hh[j]]];
            hh[j] = h;
            out[b * H + j] = h_values[h];
            a8[b * H + j] = h_in[h];
        }
    }
}

/* ---- The exact int8 product of the `c` backend (compress/quant/kernels/backends.py) -------------------
 * out[m, n] = sum_k a[m, k] * b[n, k] in int32. The codes are widened to int16 and multiplied pairwise into
 * int32 (vpmaddwd): |a|, |b| <= 128 makes each pair at most 2^15 in magnitude, so no
 * step saturates, and the caller has proved that the whole sum fits int32 (so no partial sum wraps).
 * Weights are packed once: panels of 8 output columns, each [Kp / 2][8][2] int16 (Kp = K rounded up to
 * even, zero padded; columns past N are zero). */
#if defined(__AVX2__)
#include <immintrin.h>
#endif

void pack_s8_weights(const int8_t *b, int64_t N, int64_t K, int16_t *out) {
    const int64_t Kp = (K + 1) & ~(int64_t)1, panels = (N + 7) / 8;
    for (int64_t p = 0; p < panels; p++)
        for (int64_t kk = 0; kk < Kp / 2; kk++)
            for (int64_t j = 0; j < 8; j++)
                for (int64_t t = 0; t < 2; t++) {
                    const int64_t n = p * 8 + j, k = 2 * kk + t;
                    out[((p * (Kp / 2) + kk) * 8 + j) * 2 + t] = (n < N && k < K) ? b[n * K + k] : 0;
                }
}

static void widen_rows(const int8_t *a, int64_t M, int64_t K, int64_t Kp, int16_t *a16) {
    for (int64_t m = 0; m < M; m++) {
        for (int64_t k = 0; k < K; k++) a16[m * Kp + k] = a[m * K + k];
        if (Kp > K) a16[m * Kp + K] = 0;
    }
}

#if defined(__AVX2__)
/* vpmaddwd then vpaddd, even where VNNI's fused vpdpwssd exists: with 8 accumulators the fused form is
 * latency-bound (measured ~20% slower on an AMD EPYC with AVX-512 VNNI), the split one is not. */
#define MADD_ACC(acc, x, y) _mm256_add_epi32((acc), _mm256_madd_epi16((x), (y)))

/* R rows x P panels (8 columns each) of the output, over the whole reduction. R and P are compile-time
 * constants at every call, so the accumulators stay in registers (R * P <= 8). */
static inline __attribute__((always_inline)) void block(const int16_t *a16, int64_t Kp, const int16_t *bp,
                                                        int64_t m0, int64_t p0, int64_t M, int64_t N, int R, int P,
                                                        int32_t *out) {
    __m256i acc[4][8];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < P; q++) acc[r][q] = _mm256_setzero_si256();
    const int64_t half = Kp / 2;
    for (int64_t kk = 0; kk < half; kk++) {
        __m256i w[8];
        for (int q = 0; q < P; q++) w[q] = _mm256_loadu_si256((const __m256i *)(bp + ((p0 + q) * half + kk) * 16));
        for (int r = 0; r < R; r++) {
            int32_t pair;
            __builtin_memcpy(&pair, a16 + (m0 + r) * Kp + 2 * kk, 4);
            const __m256i x = _mm256_set1_epi32(pair);
            for (int q = 0; q < P; q++) acc[r][q] = MADD_ACC(acc[r][q], x, w[q]);
        }
    }
    for (int r = 0; r < R && m0 + r < M; r++)
        for (int q = 0; q < P; q++) {
            const int64_t n0 = (p0 + q) * 8;
            int32_t *o = out + (m0 + r) * N + n0;
            if (n0 + 8 <= N) {
                _mm256_storeu_si256((__m256i *)o, acc[r][q]);
            } else if (n0 < N) {
                int32_t tmp[8];
                _mm256_storeu_si256((__m256i *)tmp, acc[r][q]);
                for (int64_t j = 0; j < N - n0; j++) o[j] = tmp[j];
            }
        }
}

/* The hot block, written out: 4 rows x 16 columns in 8 named accumulators over the whole reduction (the
 * generic block keeps its accumulator array on the stack for some shapes). */
static inline void block_4x2(const int16_t *a16, int64_t Kp, const int16_t *bp, int64_t m0, int64_t p0, int64_t N,
                             int32_t *out) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    const int64_t half = Kp / 2;
    const int16_t *w0p = bp + p0 * half * 16, *w1p = w0p + half * 16;
    const int16_t *r0 = a16 + m0 * Kp, *r1 = r0 + Kp, *r2 = r1 + Kp, *r3 = r2 + Kp;
    for (int64_t kk = 0; kk < half; kk++) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(w0p + kk * 16));
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w1p + kk * 16));
        int32_t q0, q1, q2, q3;
        __builtin_memcpy(&q0, r0 + 2 * kk, 4);
        __builtin_memcpy(&q1, r1 + 2 * kk, 4);
        __builtin_memcpy(&q2, r2 + 2 * kk, 4);
        __builtin_memcpy(&q3, r3 + 2 * kk, 4);
        __m256i x = _mm256_set1_epi32(q0);
        c00 = MADD_ACC(c00, x, w0);
        c01 = MADD_ACC(c01, x, w1);
        x = _mm256_set1_epi32(q1);
        c10 = MADD_ACC(c10, x, w0);
        c11 = MADD_ACC(c11, x, w1);
        x = _mm256_set1_epi32(q2);
        c20 = MADD_ACC(c20, x, w0);
        c21 = MADD_ACC(c21, x, w1);
        x = _mm256_set1_epi32(q3);
        c30 = MADD_ACC(c30, x, w0);
        c31 = MADD_ACC(c31, x, w1);
    }
    int32_t *o = out + m0 * N + p0 * 8;
    _mm256_storeu_si256((__m256i *)o, c00);
    _mm256_storeu_si256((__m256i *)(o + 8), c01);
    _mm256_storeu_si256((__m256i *)(o + N), c10);
    _mm256_storeu_si256((__m256i *)(o + N + 8), c11);
    _mm256_storeu_si256((__m256i *)(o + 2 * N), c20);
    _mm256_storeu_si256((__m256i *)(o + 2 * N + 8), c21);
    _mm256_storeu_si256((__m256i *)(o + 3 * N), c30);
    _mm256_storeu_si256((__m256i *)(o + 3 * N + 8), c31);
}

static void gemm_vector(const int16_t *a16, int64_t M, int64_t Kp, const int16_t *bp, int64_t N, int32_t *out) {
    const int64_t panels = (N + 7) / 8, full = N / 8; /* panels whose 8 columns all exist */
    /* Column blocks of about 128 KB of packed weights, swept by every row: a block stays in L2 while all
     * rows pass (a wide layer such as a 200 -> 8000 decoder would otherwise stream its weights per row). */
    int64_t cols = (131072 / (16 * Kp)) & ~(int64_t)1;
    cols = cols < 2 ? 2 : cols;
    for (int64_t c0 = 0; c0 < panels; c0 += cols) {
        const int64_t c1 = c0 + cols < panels ? c0 + cols : panels;
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) { /* 4 rows x 16 columns: 8 accumulators, each panel read once per 4 rows */
            int64_t p = c0;
            for (; p + 2 <= c1 && p + 2 <= full; p += 2) block_4x2(a16, Kp, bp, m, p, N, out);
            for (; p < c1; p++) block(a16, Kp, bp, m, p, M, N, 4, 1, out);
        }
        for (; m < M; m++) { /* single rows (batch-1 generation): 64 columns at once hide the madd latency */
            int64_t p = c0;
            for (; p + 8 <= c1; p += 8) block(a16, Kp, bp, m, p, M, N, 1, 8, out);
            for (; p < c1; p++) block(a16, Kp, bp, m, p, M, N, 1, 1, out);
        }
    }
}
#endif

static void gemm_scalar(const int16_t *a16, int64_t M, int64_t Kp, const int16_t *bp, int64_t N, int32_t *out) {
    const int64_t half = Kp / 2;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            const int16_t *panel = bp + (n / 8) * half * 16 + (n % 8) * 2;
            int32_t s = 0;
            for (int64_t kk = 0; kk < half; kk++)
                s += (int32_t)a16[m * Kp + 2 * kk] * panel[kk * 16] + (int32_t)a16[m * Kp + 2 * kk + 1] * panel[kk * 16 + 1];
            out[m * N + n] = s;
        }
}

/* a [M, K] int8, bp packed by pack_s8_weights, a16 scratch [M, Kp] int16, out [M, N] int32. */
void gemm_s8s32(const int8_t *a, int64_t M, int64_t K, const int16_t *bp, int64_t N, int64_t Kp, int16_t *a16,
                int32_t *out) {
    widen_rows(a, M, K, Kp, a16);
#if defined(__AVX2__)
    gemm_vector(a16, M, Kp, bp, N, out);
#else
    gemm_scalar(a16, M, Kp, bp, N, out);
#endif
}

/* The scalar loop, whatever the build's ISA: the tests compare it with the vector one. */
void gemm_s8s32_scalar(const int8_t *a, int64_t M, int64_t K, const int16_t *bp, int64_t N, int64_t Kp, int16_t *a16,
                       int32_t *out) {
    widen_rows(a, M, K, Kp, a16);
    gemm_scalar(a16, M, Kp, bp, N, out);
}

/* Which vector path this build has: 0 scalar, 1 AVX2 vpmaddwd. */
int gemm_s8s32_isa(void) {
#if defined(__AVX2__)
    return 1;
#else
    return 0;
#endif
}
