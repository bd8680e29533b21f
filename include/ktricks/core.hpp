// The core pieces every trick is built from.
#pragma once
#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/core/runner.hpp"
#include "ktricks/core/scm_rights.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/core/socket_address.hpp"
#include "ktricks/version.hpp"
