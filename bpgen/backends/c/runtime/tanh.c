/* tanh, written so that elementwise loops over it vectorise at the speed of
   expm1: tanh|z| = -t / (2 + t) with t = expm1(-2|z|) in (-1, 0], the sign
   restored by copysign (no cancellation near 0, no overflow for large |z|;
   NaN stays NaN, ±inf gives ±1).  In double, libmvec's vector expm1 makes
   this 1.8x as fast as its vector tanh (0.99 against 1.82 ns per element,
   AVX-512) at 3.4 ulp instead of 1.2; its float tanhf is faster than the
   expm1f form, so float keeps it. */
static inline real bpg_tanh(real z)
{
#ifdef BPG_FLOAT32
    return tanhf(z);
#else
    const real t = expm1(-2 * fabs(z));
    return copysign(-t / (2 + t), z);
#endif
}
