/* placeholder until the core lands */
#include "mc_core.h"
