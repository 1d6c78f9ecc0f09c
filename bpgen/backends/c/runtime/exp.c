/* exp for the elementwise loops.  glibc's vector exp (libmvec) computes a
   whole vector on a slow scalar path when any lane's argument lies below
   the range where exp is a normal number (-708.4 in double, -87.3 in
   float): the attention scores masked to -inf (exp(-inf) = 0) put one in
   nearly every vector of a causal softmax, 4-7 against 1.1 ns an element
   (AVX-512, half the lanes masked).  Here such an argument reaches exp as
   the range's end, chosen bit by bit (a plain `z < lo ? lo : z` lets the
   compiler call exp on z itself and exp(lo) once outside the loop, the
   slow path again), and its result is 0: exp(z) itself wherever it is a
   normal number, 0 instead of a subnormal below (under 2.3e-308, 1.2e-38
   in float); NaN stays NaN, exp(inf) = inf.  Where the module is
   compiled per vector width (BPG_EXP_CLAMP, prelude.c) or for AVX2 and
   up; its baseline copy, which only CPUs without AVX2 run, then runs such
   a loop unvectorised (SSE2 cannot select 64-bit lanes by a comparison of
   doubles).  Elsewhere (BPGEN_CLONES=0, an exported network's C) plain
   exp, vectorised as before. */
static inline real bpg_exp(real z)
{
#if !defined(BPG_EXP_CLAMP) && !defined(__AVX2__)
    return BPG_EXP(z);
#else
#ifdef BPG_FLOAT32
    typedef uint32_t bpg_bits;
    const real lo = -87.0f;
#else
    typedef uint64_t bpg_bits;
    const real lo = -708.0;
#endif
    const bpg_bits keep = (bpg_bits)0 - (bpg_bits)!(z < lo);
    bpg_bits zb, lb;
    real zc;
    memcpy(&zb, &z, sizeof z);
    memcpy(&lb, &lo, sizeof lo);
    zb = (zb & keep) | (lb & ~keep);
    memcpy(&zc, &zb, sizeof zc);
    const real e = BPG_EXP(zc);
    return z < lo ? 0 : e;
#endif
}
