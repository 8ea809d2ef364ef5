/* Fused CPU kernels of compress's integer path (compiled on first use by compress/quant/kernels/ckernels.py).
 *
 * Every function does, element by element and in the same order, the float64 operations that the
 * PyTorch code of the wrappers does one tensor pass at a time: int -> double conversions, one
 * multiply, one subtract, round half to even (nearbyint), clamps, one divide, double -> float.
 * IEEE-754 makes each of them exact-rounded, so the results are the same bits; the build turns off
 * FMA contraction and fast-math so that the compiler cannot merge or reorder them.
 */
#include <math.h>
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

/* codes[n] (doubles holding integers) of row m. */
static inline void requant_row(const Requant *p, int64_t m, double *restrict codes) {
    const int32_t *restrict mm = p->mm + m * p->N;
    const int32_t *restrict cw = p->cw, *restrict cst = p->cst;
    const double *restrict r = p->r;
    const int32_t rows = row_sum(p, m);
    const double lo = p->acc_lo, hi = p->acc_hi, rlo = p->relu_lo, zp = p->zp, qmin = p->qmin, qmax = p->qmax;
    for (int64_t n = 0; n < p->N; n++) {
        double a = (double)(mm[n] + rows * cw[n] + cst[n]);
        a = a < lo ? lo : a;
        a = a > hi ? hi : a;
        a = a < rlo ? rlo : a;
        double y = nearbyint(a * r[n] - zp);
        y = y < qmin ? qmin : y;
        codes[n] = y > qmax ? qmax : y;
    }
}

/* Dequantized float32 outputs: (code + out_zp) / out_scale, rounded once to float. scratch: [N]. */
void requant_values_f32(const Requant *p, double out_zp, double out_scale, float *restrict out, double *restrict scratch) {
    for (int64_t m = 0; m < p->M; m++) {
        requant_row(p, m, scratch);
        float *restrict o = out + m * p->N;
        for (int64_t n = 0; n < p->N; n++) o[n] = (float)((scratch[n] + out_zp) / out_scale);
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
} LstmStep;

void lstm_step(const LstmStep *p, int64_t t) {
    const int64_t B = p->B, H = p->H, G = 4 * H, n_h = p->n_h;
    const uint8_t *restrict x = p->x + t * B * G;
    float *restrict out = p->out + t * B * H;
    int8_t *restrict a8 = (int8_t *)p->rq.a8;
    int32_t *restrict gates = p->gates;
    const double *restrict codes = p->codes;
    const int32_t *restrict goff = p->goff;
    const uint8_t *restrict gate = p->gate, *restrict mulf = p->mulf, *restrict muli = p->muli;
    const uint8_t *restrict cell = p->cell, *restrict hid = p->hid;
    const int8_t *restrict h_in = p->h_in;
    const float *restrict h_values = p->h_values;
    const int64_t n_c = p->n_c, n_g = p->n_g, n_mi = p->n_mi;
    for (int64_t b = 0; b < B; b++) {
        requant_row(&p->rq, b, p->codes); /* reads row b of a8 before it is overwritten below */
        for (int64_t n = 0; n < G; n++) gates[n] = gate[goff[n] + x[b * G + n] * n_h + (int32_t)codes[n]];
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
    const double *restrict codes = p->codes;
    const int32_t *restrict goff = p->goff;
    const uint8_t *restrict rz = p->rz, *restrict new_reset = p->new_reset, *restrict new_gate = p->new_gate;
    const uint8_t *restrict keep_new = p->keep_new, *restrict keep_old = p->keep_old, *restrict hid = p->hid;
    const int8_t *restrict h_in = p->h_in;
    const float *restrict h_values = p->h_values;
    const int32_t h_qmin = (int32_t)p->h_qmin;
    for (int64_t b = 0; b < B; b++) {
        requant_row(&p->rq, b, p->codes); /* reads row b of a8 before it is overwritten below */
        const uint8_t *restrict xb = x + b * G;
        int32_t *restrict hh = p->h + b * H;
        for (int64_t j = 0; j < H; j++) {
            const int32_t r = rz[goff[j] + xb[j] * n_h + (int32_t)codes[j]];
            const int32_t z = rz[goff[H + j] + xb[H + j] * n_h + (int32_t)codes[H + j]];
            const int32_t nr = new_reset[r * n_h + (int32_t)codes[2 * H + j] - h_qmin];
            const int32_t n = new_gate[xb[2 * H + j] * n_nr + nr];
            const int32_t h = hid[keep_new[z * n_n + n] * n_zh + keep_old[z * n_hs + hh[j]]];
            hh[j] = h;
            out[b * H + j] = h_values[h];
            a8[b * H + j] = h_in[h];
        }
    }
}
