/* Common prelude of the C runtime helpers: includes, constants and the
   element type `real` with its math functions (double, or float when
   BPG_FLOAT32 is defined before this file). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef M_SQRT2
#define M_SQRT2 1.41421356237309504880
#endif

#ifdef BPG_FLOAT32
typedef float real;
#define BPG_EXP expf
#define BPG_LOG1P log1pf
#define BPG_FABS fabsf
#else
typedef double real;
#define BPG_EXP exp
#define BPG_LOG1P log1p
#define BPG_FABS fabs
#endif
