#include "cli/tour.hpp"
namespace ktricks::cli {
TourStop tvfs_tour_stop() { return {"tvfs", "tvfs", [] { return std::optional<std::string>("todo"); }, [](TourLog&) {}}; }
}
