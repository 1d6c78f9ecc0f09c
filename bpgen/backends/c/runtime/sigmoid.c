/* logistic function, stable for large |z| (only exp(-|z|) is evaluated) and
   branch-free, so that elementwise loops over it vectorise */
static inline real bpg_sigmoid(real z)
{
    const real e = BPG_EXP(-BPG_FABS(z));
    const real r = 1 / (1 + e);
    return z >= 0 ? r : e * r;
}
