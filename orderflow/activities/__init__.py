"""Activities: each method is one idempotent step of a saga, built with the adapters it calls."""

from orderflow.activities.carrier import CarrierActivities
from orderflow.activities.channel import ChannelActivities
from orderflow.activities.erp import ErpActivities
from orderflow.activities.warehouse import WarehouseActivities

__all__ = ["CarrierActivities", "ChannelActivities", "ErpActivities", "WarehouseActivities"]
