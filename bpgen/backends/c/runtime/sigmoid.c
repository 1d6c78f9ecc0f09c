/* logistic function, stable for large |z| */
static inline real bpg_sigmoid(real z)
{
    if (z >= 0) return 1 / (1 + BPG_EXP(-z));
    const real e = BPG_EXP(z);
    return e / (1 + e);
}
