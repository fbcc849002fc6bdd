# frozen_string_literal: true

# Shared between tenants: no tenant column, so never in a tenant's archive.
class Label < ApplicationRecord
  has_many :cards
end
