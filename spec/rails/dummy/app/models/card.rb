# frozen_string_literal: true

class Card < ApplicationRecord
  belongs_to :tenant
  belongs_to :board, counter_cache: true
  belongs_to :label, counter_cache: true, optional: true
end
