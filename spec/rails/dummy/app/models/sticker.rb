# frozen_string_literal: true

# A polymorphic counter cache: boards.stickers_count, labels.stickers_count.
class Sticker < ApplicationRecord
  belongs_to :tenant
  belongs_to :stickable, polymorphic: true, counter_cache: true
end
