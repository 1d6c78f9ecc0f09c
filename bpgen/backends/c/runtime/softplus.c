/* log(1 + exp(z)), stable for large |z| */
static inline real bpg_softplus(real z)
{
    return (z > 0 ? z : 0) + BPG_LOG1P(BPG_EXP(-BPG_FABS(z)));
}
