// Tour stop "jail": placeholder, filled in below.
#include "cli/tour.hpp"

namespace ktricks::cli {
TourStop jail_tour_stop() {
    return {"jail", "a server in an empty network namespace", [] { return std::optional<std::string>(); }, [](TourLog&) {}};
}
}  // namespace ktricks::cli
