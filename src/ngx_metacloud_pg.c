#include <ngx_config.h>
#include <ngx_core.h>
