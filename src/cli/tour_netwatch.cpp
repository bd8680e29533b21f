// Tour stop: netwatch. (filled in below)
#include "cli/tour.hpp"

namespace ktricks::cli {
TourStop netwatch_tour_stop() {
    return {"netwatch", "network events run scripts without polling (veth in a scratch namespace)",
            [] { return std::optional<std::string>("not written yet"); }, [](TourLog&) {}};
}
}  // namespace ktricks::cli
