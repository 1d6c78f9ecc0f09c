/* logistic function, stable for large |z| (only exp(-|z|) is evaluated:
   1/(1 + e) for z >= 0, e/(1 + e) below) and written so that elementwise
   loops over it vectorise */
static inline real bpg_sigmoid(real z)
{
    const real e = BPG_EXP(-BPG_FABS(z));
    return (z >= 0 ? 1 : e) / (1 + e);
}
