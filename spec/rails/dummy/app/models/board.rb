# frozen_string_literal: true

class Board < ApplicationRecord
  belongs_to :tenant
  has_many :cards, dependent: :destroy
end
