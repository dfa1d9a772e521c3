"""The GraphQL side of the Shopify simulator: an SDL subset of the Admin schema, query cost, paging.

The schema is a faithful subset, not an invention: names, nullability and shapes follow the
Admin GraphQL reference (IDs and money amounts are strings, money comes as a `MoneyBag`, lists of
records are connections with `nodes`, `edges` and `pageInfo`). Executing against it with
graphql-core gives clients Shopify's behaviour for field selection, variables and unknown fields.

Query cost follows Shopify's published model closely enough for a client to budget with it:
scalars and enums cost 0, an object 1, a connection 2 plus its page size times the cost of one
node, a mutation 10. The requested cost uses `first`/`last`; the actual cost counts what came back.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    build_schema,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
)

# Versions from 2026-01 accept `@idempotent(key:)`; from 2026-04 the listed mutations require it.
IDEMPOTENCY_FROM = "2026-01"
IDEMPOTENCY_REQUIRED_FROM = "2026-04"
IDEMPOTENT_MUTATIONS = frozenset({"refundCreate", "inventoryAdjustQuantities", "inventorySetQuantities"})
MAX_QUERY_COST = 1000
MUTATION_COST = 10
MAX_PAGE_SIZE = 250
RATE_LIMITS_DOC = "https://shopify.dev/api/usage/rate-limits"

T = TypeVar("T")

_SDL = """
scalar Decimal
scalar Money
scalar DateTime
scalar URL
scalar UnsignedInt64

enum CurrencyCode { USD CAD EUR GBP AUD }
enum OrderCancelReason { CUSTOMER DECLINED FRAUD INVENTORY STAFF OTHER }
enum OrderDisplayFinancialStatus {
  PENDING AUTHORIZED PARTIALLY_PAID PAID PARTIALLY_REFUNDED REFUNDED VOIDED EXPIRED
}
enum OrderDisplayFulfillmentStatus {
  UNFULFILLED PARTIALLY_FULFILLED FULFILLED RESTOCKED PENDING_FULFILLMENT OPEN IN_PROGRESS ON_HOLD SCHEDULED
}
enum OrderCreateFinancialStatus { PENDING AUTHORIZED PARTIALLY_PAID PAID PARTIALLY_REFUNDED REFUNDED VOIDED EXPIRED }
enum FulfillmentOrderStatus { OPEN IN_PROGRESS CLOSED CANCELLED INCOMPLETE ON_HOLD SCHEDULED }
enum FulfillmentStatus { SUCCESS CANCELLED ERROR FAILURE OPEN PENDING }
enum RefundLineItemRestockType { RETURN CANCEL LEGACY_RESTOCK NO_RESTOCK }
enum OrderTransactionKind { SALE CAPTURE AUTHORIZATION VOID REFUND CHANGE EMV_AUTHORIZATION SUGGESTED_REFUND }
enum OrderTransactionStatus { SUCCESS FAILURE PENDING ERROR AWAITING_RESPONSE UNKNOWN }
enum OrderCancelUserErrorCode { INTERNAL_ERROR INVALID NO_REFUND_PERMISSION NOT_FOUND }
enum WebhookSubscriptionTopic {
  ORDERS_CREATE ORDERS_CANCELLED REFUNDS_CREATE FULFILLMENTS_CREATE
  RETURNS_REQUEST RETURNS_APPROVE RETURNS_CLOSE RETURNS_CANCEL
}
enum ReturnStatus { CANCELED CLOSED DECLINED OPEN REQUESTED }
enum ReturnReason {
  COLOR DEFECTIVE NOT_AS_DESCRIBED OTHER SIZE_TOO_LARGE SIZE_TOO_SMALL STYLE UNKNOWN UNWANTED WRONG_ITEM
}
enum ReverseFulfillmentOrderStatus { CANCELED CLOSED OPEN }
enum ReturnErrorCode { INVALID INVALID_STATE NOT_FOUND BLANK GREATER_THAN TOO_LONG }
enum WebhookSubscriptionFormat { JSON XML }
enum OrderSortKeys { CREATED_AT UPDATED_AT ORDER_NUMBER ID }

interface Node { id: ID! }

type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String }
type MoneyV2 { amount: Decimal! currencyCode: CurrencyCode! }
type MoneyBag { shopMoney: MoneyV2! presentmentMoney: MoneyV2! }

type Shop { name: String! myshopifyDomain: String! currencyCode: CurrencyCode! }

type Location implements Node { id: ID! legacyResourceId: UnsignedInt64! name: String! }
type LocationEdge { cursor: String! node: Location! }
type LocationConnection { nodes: [Location!]! edges: [LocationEdge!]! pageInfo: PageInfo! }

type Customer implements Node {
  id: ID! legacyResourceId: UnsignedInt64! firstName: String lastName: String displayName: String!
  email: String phone: String
}

type MailingAddress {
  name: String firstName: String lastName: String company: String address1: String address2: String
  city: String province: String provinceCode: String zip: String country: String countryCodeV2: String
  phone: String
}

type PaymentTerms { id: ID! paymentTermsName: String! paymentTermsType: String! dueInDays: Int }

type TaxLine { title: String! rate: Float ratePercentage: Float priceSet: MoneyBag! }

interface DiscountApplication { index: Int! targetType: String! allocationMethod: String! }
type DiscountCodeApplication implements DiscountApplication {
  index: Int! targetType: String! allocationMethod: String! code: String!
}
type ManualDiscountApplication implements DiscountApplication {
  index: Int! targetType: String! allocationMethod: String! title: String!
}
type DiscountApplicationEdge { cursor: String! node: DiscountApplication! }
type DiscountApplicationConnection {
  nodes: [DiscountApplication!]! edges: [DiscountApplicationEdge!]! pageInfo: PageInfo!
}
type DiscountAllocation { allocatedAmountSet: MoneyBag! discountApplication: DiscountApplication! }

type InventoryQuantity { name: String! quantity: Int! updatedAt: DateTime }
type InventoryLevel implements Node {
  id: ID! location: Location! item: InventoryItem! quantities(names: [String!]!): [InventoryQuantity!]!
}
type InventoryLevelEdge { cursor: String! node: InventoryLevel! }
type InventoryLevelConnection { nodes: [InventoryLevel!]! edges: [InventoryLevelEdge!]! pageInfo: PageInfo! }
type InventoryItem implements Node {
  id: ID! legacyResourceId: UnsignedInt64! sku: String tracked: Boolean! variant: ProductVariant!
  inventoryLevels(first: Int, last: Int, after: String, before: String): InventoryLevelConnection!
  inventoryLevel(locationId: ID!): InventoryLevel
}
type ProductVariant implements Node {
  id: ID! legacyResourceId: UnsignedInt64! sku: String title: String! displayName: String! price: Money!
  inventoryItem: InventoryItem!
}
type ProductVariantEdge { cursor: String! node: ProductVariant! }
type ProductVariantConnection { nodes: [ProductVariant!]! edges: [ProductVariantEdge!]! pageInfo: PageInfo! }

type LineItem implements Node {
  id: ID! name: String! title: String! sku: String quantity: Int! currentQuantity: Int!
  refundableQuantity: Int! unfulfilledQuantity: Int! requiresShipping: Boolean!
  variant: ProductVariant
  originalUnitPriceSet: MoneyBag! discountedUnitPriceSet: MoneyBag! originalTotalSet: MoneyBag!
  totalDiscountSet: MoneyBag!
  discountAllocations: [DiscountAllocation!]! taxLines(first: Int): [TaxLine!]!
}
type LineItemEdge { cursor: String! node: LineItem! }
type LineItemConnection { nodes: [LineItem!]! edges: [LineItemEdge!]! pageInfo: PageInfo! }

type ShippingLine {
  id: ID title: String! code: String originalPriceSet: MoneyBag! discountedPriceSet: MoneyBag!
  discountAllocations: [DiscountAllocation!]! taxLines: [TaxLine!]!
}
type ShippingLineEdge { cursor: String! node: ShippingLine! }
type ShippingLineConnection { nodes: [ShippingLine!]! edges: [ShippingLineEdge!]! pageInfo: PageInfo! }

type FulfillmentOrderAssignedLocation { name: String! location: Location }
type FulfillmentOrderLineItem implements Node {
  id: ID! totalQuantity: Int! remainingQuantity: Int! sku: String lineItem: LineItem!
}
type FulfillmentOrderLineItemEdge { cursor: String! node: FulfillmentOrderLineItem! }
type FulfillmentOrderLineItemConnection {
  nodes: [FulfillmentOrderLineItem!]! edges: [FulfillmentOrderLineItemEdge!]! pageInfo: PageInfo!
}
type FulfillmentOrder implements Node {
  id: ID! status: FulfillmentOrderStatus! createdAt: DateTime! updatedAt: DateTime! orderId: ID!
  assignedLocation: FulfillmentOrderAssignedLocation!
  lineItems(first: Int, last: Int, after: String, before: String): FulfillmentOrderLineItemConnection!
}
type FulfillmentOrderEdge { cursor: String! node: FulfillmentOrder! }
type FulfillmentOrderConnection { nodes: [FulfillmentOrder!]! edges: [FulfillmentOrderEdge!]! pageInfo: PageInfo! }

type FulfillmentTrackingInfo { company: String number: String url: URL }
type FulfillmentLineItem implements Node { id: ID! quantity: Int lineItem: LineItem! }
type FulfillmentLineItemEdge { cursor: String! node: FulfillmentLineItem! }
type FulfillmentLineItemConnection {
  nodes: [FulfillmentLineItem!]! edges: [FulfillmentLineItemEdge!]! pageInfo: PageInfo!
}
type Fulfillment implements Node {
  id: ID! legacyResourceId: UnsignedInt64! name: String! status: FulfillmentStatus! createdAt: DateTime!
  location: Location trackingInfo(first: Int): [FulfillmentTrackingInfo!]!
  fulfillmentLineItems(first: Int, last: Int, after: String, before: String): FulfillmentLineItemConnection!
}

interface ReturnLineItemType {
  id: ID! quantity: Int! customerNote: String returnReasonNote: String! refundableQuantity: Int!
  refundedQuantity: Int!
}
type ReturnLineItem implements ReturnLineItemType & Node {
  id: ID! quantity: Int! customerNote: String returnReasonNote: String! refundableQuantity: Int!
  refundedQuantity: Int! returnReason: ReturnReason! fulfillmentLineItem: FulfillmentLineItem!
  withCodeDiscountedTotalPriceSet: MoneyBag!
}
type ReturnLineItemTypeEdge { cursor: String! node: ReturnLineItemType! }
type ReturnLineItemTypeConnection {
  nodes: [ReturnLineItemType!]! edges: [ReturnLineItemTypeEdge!]! pageInfo: PageInfo!
}
type ReverseDeliveryLabelV2 { publicFileUrl: URL createdAt: DateTime! updatedAt: DateTime! }
type ReverseDeliveryTrackingV2 { carrierName: String number: String url: URL }
type ReverseDeliveryShippingDeliverable { label: ReverseDeliveryLabelV2 tracking: ReverseDeliveryTrackingV2 }
union ReverseDeliveryDeliverable = ReverseDeliveryShippingDeliverable
type ReverseDeliveryLineItem { id: ID! quantity: Int! }
type ReverseDeliveryLineItemEdge { cursor: String! node: ReverseDeliveryLineItem! }
type ReverseDeliveryLineItemConnection {
  nodes: [ReverseDeliveryLineItem!]! edges: [ReverseDeliveryLineItemEdge!]! pageInfo: PageInfo!
}
type ReverseDelivery implements Node {
  id: ID! deliverable: ReverseDeliveryDeliverable reverseFulfillmentOrder: ReverseFulfillmentOrder!
  reverseDeliveryLineItems(first: Int, last: Int, after: String, before: String): ReverseDeliveryLineItemConnection!
}
type ReverseDeliveryEdge { cursor: String! node: ReverseDelivery! }
type ReverseDeliveryConnection { nodes: [ReverseDelivery!]! edges: [ReverseDeliveryEdge!]! pageInfo: PageInfo! }
type ReverseFulfillmentOrderLineItem implements Node {
  id: ID! totalQuantity: Int! fulfillmentLineItem: FulfillmentLineItem
}
type ReverseFulfillmentOrderLineItemEdge { cursor: String! node: ReverseFulfillmentOrderLineItem! }
type ReverseFulfillmentOrderLineItemConnection {
  nodes: [ReverseFulfillmentOrderLineItem!]! edges: [ReverseFulfillmentOrderLineItemEdge!]! pageInfo: PageInfo!
}
type ReverseFulfillmentOrder implements Node {
  id: ID! status: ReverseFulfillmentOrderStatus! order: Order
  lineItems(first: Int, last: Int, after: String, before: String): ReverseFulfillmentOrderLineItemConnection!
  reverseDeliveries(first: Int, last: Int, after: String, before: String): ReverseDeliveryConnection!
}
type ReverseFulfillmentOrderEdge { cursor: String! node: ReverseFulfillmentOrder! }
type ReverseFulfillmentOrderConnection {
  nodes: [ReverseFulfillmentOrder!]! edges: [ReverseFulfillmentOrderEdge!]! pageInfo: PageInfo!
}
type ReturnDecline { reason: String! note: String }
type Return implements Node {
  id: ID! name: String! status: ReturnStatus! order: Order! totalQuantity: Int! createdAt: DateTime
  closedAt: DateTime decline: ReturnDecline
  returnLineItems(first: Int, last: Int, after: String, before: String): ReturnLineItemTypeConnection!
  reverseFulfillmentOrders(first: Int, last: Int, after: String, before: String): ReverseFulfillmentOrderConnection!
}
type ReturnEdge { cursor: String! node: Return! }
type ReturnConnection { nodes: [Return!]! edges: [ReturnEdge!]! pageInfo: PageInfo! }

type OrderTransaction implements Node {
  id: ID! kind: OrderTransactionKind! status: OrderTransactionStatus! gateway: String
  amountSet: MoneyBag! createdAt: DateTime! parentTransaction: OrderTransaction
}
type OrderTransactionEdge { cursor: String! node: OrderTransaction! }
type OrderTransactionConnection {
  nodes: [OrderTransaction!]! edges: [OrderTransactionEdge!]! pageInfo: PageInfo!
}

type RefundLineItem {
  id: ID lineItem: LineItem! quantity: Int! restockType: RefundLineItemRestockType! restocked: Boolean!
  location: Location subtotalSet: MoneyBag! totalTaxSet: MoneyBag!
}
type RefundLineItemEdge { cursor: String! node: RefundLineItem! }
type RefundLineItemConnection { nodes: [RefundLineItem!]! edges: [RefundLineItemEdge!]! pageInfo: PageInfo! }
type Refund implements Node {
  id: ID! legacyResourceId: UnsignedInt64! note: String createdAt: DateTime totalRefundedSet: MoneyBag!
  order: Order!
  refundLineItems(first: Int, last: Int, after: String, before: String): RefundLineItemConnection!
  transactions(first: Int, last: Int, after: String, before: String): OrderTransactionConnection!
}

type Order implements Node {
  id: ID! legacyResourceId: UnsignedInt64! name: String! email: String phone: String note: String
  tags: [String!]!
  createdAt: DateTime! updatedAt: DateTime! processedAt: DateTime!
  cancelledAt: DateTime cancelReason: OrderCancelReason closed: Boolean! closedAt: DateTime
  currencyCode: CurrencyCode!
  displayFinancialStatus: OrderDisplayFinancialStatus
  displayFulfillmentStatus: OrderDisplayFulfillmentStatus!
  customer: Customer shippingAddress: MailingAddress billingAddress: MailingAddress
  paymentTerms: PaymentTerms
  lineItems(first: Int, last: Int, after: String, before: String): LineItemConnection!
  shippingLines(first: Int, last: Int, after: String, before: String): ShippingLineConnection!
  discountApplications(first: Int, last: Int, after: String, before: String): DiscountApplicationConnection!
  taxLines: [TaxLine!]!
  subtotalPriceSet: MoneyBag totalPriceSet: MoneyBag! totalTaxSet: MoneyBag totalDiscountsSet: MoneyBag
  totalShippingPriceSet: MoneyBag! totalRefundedSet: MoneyBag! currentTotalPriceSet: MoneyBag!
  fulfillmentOrders(first: Int, last: Int, after: String, before: String, displayable: Boolean):
    FulfillmentOrderConnection!
  fulfillments(first: Int): [Fulfillment!]!
  refunds(first: Int): [Refund!]!
  transactions(first: Int): [OrderTransaction!]!
  returns(first: Int, last: Int, after: String, before: String, query: String): ReturnConnection!
}
type OrderEdge { cursor: String! node: Order! }
type OrderConnection { nodes: [Order!]! edges: [OrderEdge!]! pageInfo: PageInfo! }

type Job { id: ID! done: Boolean! }

type WebhookSubscription implements Node {
  id: ID! topic: WebhookSubscriptionTopic! format: WebhookSubscriptionFormat! callbackUrl: URL uri: String!
  includeFields: [String!]! createdAt: DateTime! updatedAt: DateTime!
}
type WebhookSubscriptionEdge { cursor: String! node: WebhookSubscription! }
type WebhookSubscriptionConnection {
  nodes: [WebhookSubscription!]! edges: [WebhookSubscriptionEdge!]! pageInfo: PageInfo!
}

type UserError { field: [String!] message: String! }
type ReturnUserError { field: [String!] message: String! code: ReturnErrorCode }
type OrderCancelUserError { field: [String!] message: String! code: OrderCancelUserErrorCode }
type OrderCreateUserError { field: [String!] message: String! code: String }
type InventoryAdjustQuantitiesUserError { field: [String!] message: String! code: String }
type InventorySetQuantitiesUserError { field: [String!] message: String! code: String }

type InventoryChange {
  name: String! delta: Int! quantityAfterChange: Int item: InventoryItem location: Location
}
type InventoryAdjustmentGroup {
  id: ID! createdAt: DateTime! reason: String! referenceDocumentUri: String changes: [InventoryChange!]!
}

type OrderCreatePayload { order: Order userErrors: [OrderCreateUserError!]! }
type OrderCancelPayload { job: Job orderCancelUserErrors: [OrderCancelUserError!]! userErrors: [UserError!]! }
type FulfillmentCreatePayload { fulfillment: Fulfillment userErrors: [UserError!]! }
type RefundCreatePayload { refund: Refund order: Order userErrors: [UserError!]! }
type InventoryAdjustQuantitiesPayload {
  inventoryAdjustmentGroup: InventoryAdjustmentGroup userErrors: [InventoryAdjustQuantitiesUserError!]!
}
type InventorySetQuantitiesPayload {
  inventoryAdjustmentGroup: InventoryAdjustmentGroup userErrors: [InventorySetQuantitiesUserError!]!
}
type ReturnRequestPayload { return: Return userErrors: [ReturnUserError!]! }
type ReturnApproveRequestPayload { return: Return userErrors: [ReturnUserError!]! }
type ReturnClosePayload { return: Return userErrors: [ReturnUserError!]! }
type ReturnCancelPayload { return: Return userErrors: [ReturnUserError!]! }
type ReverseDeliveryCreateWithShippingPayload { reverseDelivery: ReverseDelivery userErrors: [ReturnUserError!]! }
type WebhookSubscriptionCreatePayload { webhookSubscription: WebhookSubscription userErrors: [UserError!]! }
type WebhookSubscriptionDeletePayload { deletedWebhookSubscriptionId: ID userErrors: [UserError!]! }

input MoneyInput { amount: Decimal! currencyCode: CurrencyCode! }
input MoneyBagInput { shopMoney: MoneyInput! presentmentMoney: MoneyInput }
input MailingAddressInput {
  firstName: String lastName: String company: String address1: String address2: String city: String
  provinceCode: String zip: String countryCode: String phone: String
}
input OrderCreateAssociateCustomerAttributesInput { id: ID email: String }
input OrderCreateCustomerInput { toAssociate: OrderCreateAssociateCustomerAttributesInput }
input OrderCreateTaxLineInput { title: String! rate: Decimal! priceSet: MoneyBagInput }
input OrderCreateLineItemInput {
  variantId: ID sku: String title: String quantity: Int! priceSet: MoneyBagInput requiresShipping: Boolean
  taxLines: [OrderCreateTaxLineInput!]
}
input OrderCreateShippingLineInput {
  title: String! code: String priceSet: MoneyBagInput! taxLines: [OrderCreateTaxLineInput!]
}
input OrderCreateDiscountCodeItemPercentageInput { code: String! percentage: Float! }
input OrderCreateDiscountCodeInput { itemPercentageDiscountCode: OrderCreateDiscountCodeItemPercentageInput }
input OrderCreateOrderInput {
  currency: CurrencyCode email: String phone: String note: String tags: [String!]
  financialStatus: OrderCreateFinancialStatus customer: OrderCreateCustomerInput
  lineItems: [OrderCreateLineItemInput!] shippingAddress: MailingAddressInput billingAddress: MailingAddressInput
  shippingLines: [OrderCreateShippingLineInput!] discountCode: OrderCreateDiscountCodeInput
}
input OrderCreateOptionsInput { sendReceipt: Boolean sendFulfillmentReceipt: Boolean inventoryBehaviour: String }
input OrderCancelRefundMethodInput { originalPaymentMethodsRefund: Boolean }

input FulfillmentOrderLineItemInput { id: ID! quantity: Int! }
input FulfillmentOrderLineItemsInput {
  fulfillmentOrderId: ID! fulfillmentOrderLineItems: [FulfillmentOrderLineItemInput!]
}
input FulfillmentTrackingInput { company: String number: String numbers: [String!] url: URL urls: [URL!] }
input FulfillmentOriginAddressInput {
  address1: String address2: String city: String zip: String provinceCode: String countryCode: String!
}
input FulfillmentInput {
  lineItemsByFulfillmentOrder: [FulfillmentOrderLineItemsInput!]! notifyCustomer: Boolean = false
  trackingInfo: FulfillmentTrackingInput originAddress: FulfillmentOriginAddressInput
}

input RefundLineItemInput { lineItemId: ID! quantity: Int! restockType: RefundLineItemRestockType locationId: ID }
input ShippingRefundInput { amount: Money fullRefund: Boolean }
input OrderTransactionInput { orderId: ID! parentId: ID amount: Money! gateway: String! kind: OrderTransactionKind! }
input RefundInput {
  orderId: ID! note: String notify: Boolean currency: CurrencyCode shipping: ShippingRefundInput
  refundLineItems: [RefundLineItemInput!] transactions: [OrderTransactionInput!]
}

input ReturnRequestLineItemInput {
  fulfillmentLineItemId: ID! quantity: Int! returnReason: ReturnReason customerNote: String
}
input ReturnRequestInput { orderId: ID! returnLineItems: [ReturnRequestLineItemInput!]! }
input ReturnApproveRequestInput { id: ID! notifyCustomer: Boolean = false }
input ReverseDeliveryLineItemInput { reverseFulfillmentOrderLineItemId: ID! quantity: Int! }
input ReverseDeliveryTrackingInput { number: String url: URL }
input ReverseDeliveryLabelInput { fileUrl: URL! }

input InventoryChangeInput { delta: Int! inventoryItemId: ID! locationId: ID! ledgerDocumentUri: String }
input InventoryAdjustQuantitiesInput {
  name: String! reason: String! referenceDocumentUri: String changes: [InventoryChangeInput!]!
}
input InventoryQuantityInput {
  inventoryItemId: ID! locationId: ID! quantity: Int! compareQuantity: Int changeFromQuantity: Int
}
input InventorySetQuantitiesInput {
  name: String! reason: String! referenceDocumentUri: String ignoreCompareQuantity: Boolean = false
  quantities: [InventoryQuantityInput!]!
}

input WebhookSubscriptionInput {
  callbackUrl: URL uri: String format: WebhookSubscriptionFormat = JSON includeFields: [String!]
}

type Query {
  shop: Shop!
  order(id: ID!): Order
  orders(first: Int, last: Int, after: String, before: String, query: String, reverse: Boolean = false,
         sortKey: OrderSortKeys = ID): OrderConnection!
  job(id: ID!): Job
  location(id: ID!): Location
  locations(first: Int, last: Int, after: String, before: String): LocationConnection!
  inventoryItem(id: ID!): InventoryItem
  inventoryLevel(id: ID!): InventoryLevel
  productVariants(first: Int, last: Int, after: String, before: String, query: String): ProductVariantConnection!
  return(id: ID!): Return
  webhookSubscription(id: ID!): WebhookSubscription
  webhookSubscriptions(first: Int, last: Int, after: String, before: String, topics: [WebhookSubscriptionTopic!]):
    WebhookSubscriptionConnection!
}

type Mutation {
  orderCreate(order: OrderCreateOrderInput!, options: OrderCreateOptionsInput): OrderCreatePayload
  orderCancel(orderId: ID!, reason: OrderCancelReason!, restock: Boolean!, notifyCustomer: Boolean, refund: Boolean,
              refundMethod: OrderCancelRefundMethodInput, staffNote: String): OrderCancelPayload
  fulfillmentCreate(fulfillment: FulfillmentInput!, message: String): FulfillmentCreatePayload
  refundCreate(input: RefundInput!): RefundCreatePayload
  inventoryAdjustQuantities(input: InventoryAdjustQuantitiesInput!): InventoryAdjustQuantitiesPayload
  inventorySetQuantities(input: InventorySetQuantitiesInput!): InventorySetQuantitiesPayload
  webhookSubscriptionCreate(topic: WebhookSubscriptionTopic!, webhookSubscription: WebhookSubscriptionInput!):
    WebhookSubscriptionCreatePayload
  webhookSubscriptionDelete(id: ID!): WebhookSubscriptionDeletePayload
  returnRequest(input: ReturnRequestInput!): ReturnRequestPayload
  returnApproveRequest(input: ReturnApproveRequestInput!): ReturnApproveRequestPayload
  returnClose(id: ID!): ReturnClosePayload
  returnCancel(id: ID!, notifyCustomer: Boolean = false): ReturnCancelPayload
  reverseDeliveryCreateWithShipping(
    reverseFulfillmentOrderId: ID!, reverseDeliveryLineItems: [ReverseDeliveryLineItemInput!]!,
    trackingInput: ReverseDeliveryTrackingInput, labelInput: ReverseDeliveryLabelInput, notifyCustomer: Boolean = true
  ): ReverseDeliveryCreateWithShippingPayload
}
"""

_IDEMPOTENT_DIRECTIVE = "directive @idempotent(key: String!) on FIELD\n"


def supports_idempotency(version: str) -> bool:
    """Whether an API version knows the `@idempotent` directive (2026-01 and later, and unstable)."""
    return version == "unstable" or version >= IDEMPOTENCY_FROM


def requires_idempotency(version: str) -> bool:
    """Whether an API version refuses refund and inventory mutations without `@idempotent`."""
    return version == "unstable" or version >= IDEMPOTENCY_REQUIRED_FROM


@cache
def schema_for(version: str) -> GraphQLSchema:
    """The schema a given API version serves: the directive exists only from 2026-01."""
    with_directive = supports_idempotency(version)
    return build_schema((_IDEMPOTENT_DIRECTIVE if with_directive else "") + _SDL)


# --- Global IDs -------------------------------------------------------------------------------


def gid(kind: str, number: int | str) -> str:
    """A Shopify global ID, `gid://shopify/{Kind}/{number}`."""
    return f"gid://shopify/{kind}/{number}"


_GID = re.compile(r"^gid://shopify/(?P<kind>[A-Za-z]+)/(?P<id>[^/?]+)")


def parse_gid(value: object, kind: str) -> int | None:
    """The numeric id inside a global ID of the expected kind; None when it is not one."""
    if not isinstance(value, str):
        return None
    match = _GID.match(value)
    if match is None or match["kind"] != kind or not match["id"].isdigit():
        return None
    return int(match["id"])


def parse_gid_text(value: object, kind: str) -> str | None:
    """The id part (not necessarily numeric) of a global ID of the expected kind."""
    if not isinstance(value, str):
        return None
    match = _GID.match(value)
    return match["id"] if match is not None and match["kind"] == kind else None


# --- Connections ------------------------------------------------------------------------------


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"last_index": index}).encode()).decode()


def _cursor_index(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(json.loads(base64.urlsafe_b64decode(cursor.encode()))["last_index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}") from exc


def connection(
    items: Sequence[T],
    render: Callable[[T], dict[str, Any]],
    *,
    first: int | None = None,
    last: int | None = None,
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    """One page of a list as a Relay connection, refusing an unbounded request as Shopify does."""
    if first is None and last is None:
        raise GraphQLError("you must provide one of first or last")
    size = first if first is not None else last
    assert size is not None
    if size < 0 or size > MAX_PAGE_SIZE:
        raise GraphQLError(f"The value for first/last must be between 0 and {MAX_PAGE_SIZE}")
    start = 0
    end = len(items)
    after_index = _cursor_index(after)
    before_index = _cursor_index(before)
    if after_index is not None:
        start = after_index + 1
    if before_index is not None:
        end = min(end, before_index)
    if first is not None:
        window = list(range(start, min(end, start + first)))
    else:
        window = list(range(max(start, end - size), end))
    edges = [{"cursor": _cursor(i), "node": render(items[i])} for i in window]
    return {
        "nodes": [edge["node"] for edge in edges],
        "edges": edges,
        "pageInfo": {
            "hasNextPage": bool(window) and window[-1] + 1 < end,
            "hasPreviousPage": bool(window) and window[0] > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def first_n(items: Sequence[T], first: int | None) -> list[T]:
    """A plain list field's `first` argument: at most that many, all when absent."""
    return list(items if first is None else items[:first])


# --- Query cost -------------------------------------------------------------------------------


def operation_of(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    """The operation a request runs: the named one, or the only one."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        return next((op for op in operations if op.name and op.name.value == operation_name), None)
    return operations[0] if len(operations) == 1 else None


class CostCalculator:
    """Shopify-style cost of one operation, requested (from page sizes) or actual (from the data)."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, variables: Mapping[str, Any]) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}

    def cost(self, operation: OperationDefinitionNode, data: Mapping[str, Any] | None = None) -> int:
        """The cost of an operation; pass the result data to get the actual cost."""
        if operation.operation is OperationType.MUTATION:
            return MUTATION_COST * sum(1 for _ in self._fields(self.schema.mutation_type, operation.selection_set))
        root = self.schema.query_type
        assert root is not None
        return self._selection(root, operation.selection_set, data, page_size=None, actual=data is not None)

    def _fields(
        self, owner: Any, selection_set: SelectionSetNode | None
    ) -> Iterator[tuple[GraphQLObjectType, FieldNode]]:
        if selection_set is None or owner is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield owner, selection
            elif isinstance(selection, InlineFragmentNode):
                target = (
                    self.schema.get_type(selection.type_condition.name.value) if selection.type_condition else owner
                )
                yield from self._fields(target, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:
                    yield from self._fields(
                        self.schema.get_type(fragment.type_condition.name.value), fragment.selection_set
                    )

    def _int_arg(self, node: FieldNode, *names: str) -> int | None:
        for argument in node.arguments or ():
            if argument.name.value not in names:
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                return int(value.value)
            if isinstance(value, VariableNode):
                raw = self.variables.get(value.name.value)
                return raw if isinstance(raw, int) else None
        return None

    def _selection(
        self, owner: Any, selection_set: SelectionSetNode | None, data: Any, *, page_size: int | None, actual: bool
    ) -> int:
        total = 0
        for parent, node in self._fields(owner, selection_set):
            name = node.name.value
            fields = getattr(parent, "fields", {})
            if name.startswith("__") or name not in fields:
                continue
            field_type = fields[name].type
            named = get_named_type(field_type)
            if is_leaf_type(named):
                continue
            key = node.alias.value if node.alias else name
            child = data.get(key) if isinstance(data, Mapping) else None
            size = self._int_arg(node, "first", "last")
            if named.name.endswith("Connection"):
                total += 2 + self._selection(named, node.selection_set, child, page_size=size or 0, actual=actual)
            elif is_list_type(get_nullable_type(field_type)):
                if actual:
                    items = child if isinstance(child, list) else []
                    total += sum(
                        1 + self._selection(named, node.selection_set, item, page_size=None, actual=True)
                        for item in items
                    )
                else:
                    count = size if size is not None else (page_size if page_size is not None else 1)
                    per_item = 1 + self._selection(named, node.selection_set, None, page_size=None, actual=False)
                    total += count * per_item
            else:
                if actual and child is None:
                    total += 1
                    continue
                total += 1 + self._selection(named, node.selection_set, child, page_size=None, actual=actual)
        return total


# --- Errors -----------------------------------------------------------------------------------

_UNDEFINED_FIELD = re.compile(r"^Cannot query field '(?P<field>[^']+)' on type '(?P<type>[^']+)'\.")


def shopify_error(error: GraphQLError) -> dict[str, Any]:
    """A graphql-core error in the wording and shape Shopify's Admin API uses."""
    formatted: dict[str, Any] = dict(error.formatted)
    match = _UNDEFINED_FIELD.match(error.message)
    if match is not None:
        formatted["message"] = f"Field '{match['field']}' doesn't exist on type '{match['type']}'"
        formatted["extensions"] = {"code": "undefinedField", "typeName": match["type"], "fieldName": match["field"]}
    return formatted
